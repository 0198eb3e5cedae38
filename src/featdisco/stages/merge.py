"""Near-duplicate clusters → one cluster each (issue 15 item 1).

k is a resolution knob: at a useful k one behaviour comes back as several clusters with
near-identical labels, and each underestimates how often the behaviour occurs. After naming,
each cluster's nearest clusters of its kind are candidates (by centroid cosine, relative to
how similar the kind's clusters are to each other, or a near-identical label); the LLM sees
the candidates in batches, each with its label and members, says which describe the same
behaviour and names each merged group from its members. Merged centroids are the
size-weighted mean of their parts, and every feature then goes to its nearest final
centroid — the one rule the cluster stage and ``transform`` assign by. Rounds repeat (new
centroids have new neighbours) until nothing merges.

The k-means partition stays in the run under ``raw_`` names; this stage writes the final
partition under the names everything downstream reads, and ``merges.parquet`` (each raw
cluster → its final cluster). Each final cluster also gets ``min_similarity``, the 1st
percentile of its members' similarity to its centroid: ``transform`` calls a new feature
unassigned when it is farther from its nearest centroid than that.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine
from featdisco.llm.replies import MergeGroups
from featdisco.llm.summary import Failures
from featdisco.prompts import Prompt
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.cluster import string_ids
from featdisco.stages.kmeans import member_floors, nearest
from featdisco.stages.members import ClusterMembers
from featdisco.stages.name import KIND_PLURALS, LABELS_SCHEMA, LabelRow, labels_of, sample_members
from featdisco.storage.matrix import read_rows, save_matrix
from featdisco.transcripts.model import PIECE_KINDS

STAGE_VERSION = 2  # 2: writes merged_* (curate writes the partition the run reads)
RAW = {"clusters": "raw_clusters.parquet", "assignments": "raw_assignments.parquet",
       "labels": "raw_labels.parquet"}
RAW_CENTROIDS = tuple(f"raw_centroids_{kind}.npy" for kind in PIECE_KINDS)
# What this stage writes: the merged partition, which the curate stage reads, applies the
# researcher's edits to, and turns into the partition the rest of the run reads.
OUT = {"assignments": "merged_assignments.parquet", "clusters": "merged_clusters.parquet",
       "labels": "merged_labels.parquet",
       **{f"centroids_{kind}": f"merged_centroids_{kind}.npy" for kind in PIECE_KINDS}}
BATCH = 10  # clusters per check: each shown with SHOWN members
SHOWN = 10
POOL = 50  # distinct members kept per cluster to draw what a check shows from
NEIGHBOURS = 3  # nearest clusters considered per cluster
CANDIDATE_QUANTILE = 0.95  # a neighbour is a candidate above this quantile of the kind's pair cosines
LABEL_QUANTILE = 0.75  # ... or above this one when the labels nearly match
MAX_ROUNDS = 3
PAIR_SAMPLE = 200_000  # pairs of clusters whose cosines set the kind's candidate threshold
MERGE_SCHEMA = MergeGroups.json_schema()
MERGES_SCHEMA = pa.schema([("raw_cluster_id", pa.int64()), ("kind", pa.string()), ("cluster_id", pa.int64()),
                           ("raw_label", pa.string()), ("label", pa.string()), ("merged", pa.bool_())])


def normalise_label(label: str | None) -> str:
    return " ".join("".join(c for c in (label or "").lower() if c.isalnum() or c.isspace()).split())


def near_duplicate(a: str | None, b: str | None, ratio: float = 0.85) -> bool:
    """Two labels that say the same thing in (almost) the same words."""
    x, y = normalise_label(a), normalise_label(b)
    return bool(x) and bool(y) and (x == y or difflib.SequenceMatcher(None, x, y).ratio() >= ratio)


def duplicate_share(labels: Sequence[str | None]) -> float:
    """Share of labels that duplicate or nearly duplicate another label in ``labels``."""
    dup = [any(near_duplicate(a, b) for j, b in enumerate(labels) if j != i) for i, a in enumerate(labels)]
    return float(np.mean(dup)) if dup else 0.0


@dataclass(slots=True)
class Group:
    """One current cluster of a kind: the raw clusters it holds, its centroid and name."""

    raw: list[int]
    size: int
    centroid: NDArray[np.float32]
    label: str | None
    description: str | None
    sample: list[str]
    members: list[str]  # a random sample of distinct members (what a check shows is drawn from it)
    merged: bool = False


@dataclass(slots=True)
class MergeReport(Failures):
    calls: int = 0
    merged: int = 0  # raw clusters folded into another
    rounds: int = 0


class FinalCounts(TypedDict):
    clusters: int  # final clusters
    emptied: int  # raw clusters whose every member went to another


class MergeCounts(FinalCounts):
    """The merge stage's counts, as the manifest keeps them."""

    raw_clusters: int
    merged: int  # raw clusters folded into another
    checks: int  # LLM calls
    failed: int
    rounds: int
    reasons: NotRequired[dict[str, int]]  # failed calls by reason


def candidate_pairs(groups: list[Group], judged: set[frozenset[int]]) -> list[tuple[int, int]]:
    """Pairs of groups worth showing the LLM: each group's nearest neighbours whose centroid
    cosine is high for this kind (a quantile of all its pairs, so any embedder's scale
    works), or moderately high with a near-identical label; pairs judged apart are skipped."""
    if len(groups) < 2:
        return []
    C = np.ascontiguousarray(np.stack([g.centroid for g in groups]), dtype=np.float32)
    n = len(groups)
    rng = np.random.default_rng(0)  # the kind's pair cosines, from a sample when there are many
    a, b = rng.integers(0, n, PAIR_SAMPLE), rng.integers(0, n, PAIR_SAMPLE)
    if n * (n - 1) // 2 <= PAIR_SAMPLE:
        a, b = np.triu_indices(n, 1)
    keep = a != b
    sims = np.einsum("ij,ij->i", C[a[keep]], C[b[keep]])
    high, moderate = np.quantile(sims, CANDIDATE_QUANTILE), np.quantile(sims, LABEL_QUANTILE)
    index = faiss.IndexFlatIP(C.shape[1])
    index.add(C)
    near_sims, near_ids = index.search(C, min(NEIGHBOURS + 1, n))
    pairs: set[tuple[int, int]] = set()
    for i in range(n):
        for sim, j in zip(near_sims[i], near_ids[i], strict=True):
            j = int(j)
            if j == i or j < 0:
                continue
            if sim >= high or (sim >= moderate and near_duplicate(groups[i].label, groups[j].label)):
                pairs.add((min(i, j), max(i, j)))
    return sorted(p for p in pairs if _key(groups[p[0]], groups[p[1]]) not in judged)


def _key(a: Group, b: Group) -> frozenset[int]:
    return frozenset((min(a.raw), min(b.raw)))


def batches(pairs: list[tuple[int, int]], size: int = BATCH) -> list[list[int]]:
    """Connected candidates in batches of at most ``size``, neighbours kept together."""
    adj: dict[int, set[int]] = {}
    for a, b in pairs:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    seen: set[int] = set()
    out: list[list[int]] = []
    for start in sorted(adj):
        if start in seen:
            continue
        order, queue = [], [start]
        seen.add(start)
        while queue:  # breadth first, so a batch holds a cluster and its neighbours
            node = queue.pop(0)
            order.append(node)
            for nb in sorted(adj[node] - seen):
                seen.add(nb)
                queue.append(nb)
        out.extend(order[i:i + size] for i in range(0, len(order), size) if len(order[i:i + size]) > 1)
    return out


def check_requests(kind: str, groups: list[Group], plan: list[list[int]], prompt: Prompt,
                   seed: int) -> list[LLMRequest]:
    requests = []
    for batch in plan:
        blocks = []
        for pos, gi in enumerate(batch, start=1):
            g = groups[gi]
            shown = _shown(g, seed)
            blocks.append(f"Cluster {pos}: {g.label or '(unnamed)'}\n" + "\n".join(f"- {m}" for m in shown))
        requests.append(LLMRequest(
            prompt.render(n_clusters=len(batch), kind_plural=KIND_PLURALS[kind], clusters="\n\n".join(blocks)),
            schema=MERGE_SCHEMA, schema_name="merge_groups",
            sampling=Sampling(temperature=0.0, max_tokens=120 + 60 * len(batch)), prompt_version=prompt.version))
    return requests


def _shown(g: Group, seed: int) -> list[str]:
    pool = sorted(set(g.members))
    if len(pool) <= SHOWN:
        return pool
    return sorted(random.Random(seed * 1_000_003 + min(g.raw)).sample(pool, SHOWN))


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def merge_kind(kind: str, groups: list[Group], engine: CallEngine, prompt: Prompt, seed: int,
               report: MergeReport) -> list[Group]:
    """Rounds of candidate → check → merge for one kind's groups."""
    judged: set[frozenset[int]] = set()
    for _ in range(MAX_ROUNDS):
        plan = batches(candidate_pairs(groups, judged))
        if not plan:
            break
        report.rounds += 1
        results = engine.run_sync(check_requests(kind, groups, plan, prompt, seed), desc=f"merge {kind}")
        parent = list(range(len(groups)))
        names: dict[int, tuple[str, str]] = {}

        for batch, res in zip(plan, results, strict=True):
            report.calls += 1
            for a in batch:
                for b in batch:
                    if a < b:
                        judged.add(_key(groups[a], groups[b]))
            if not (res.ok and isinstance(res.data, dict)):
                report.fail(res.reason or res.status)
                continue
            for grp in MergeGroups.read(res.data).groups:
                ids = sorted({batch[i - 1] for i in grp.ids if 1 <= i <= len(batch)})
                if len(ids) < 2:
                    continue
                for other in ids[1:]:
                    parent[_root(parent, other)] = _root(parent, ids[0])
                names[_root(parent, ids[0])] = (" ".join(grp.label.split()), " ".join(grp.description.split()))
        components: dict[int, list[int]] = {}
        for i in range(len(groups)):
            components.setdefault(_root(parent, i), []).append(i)
        if all(len(c) == 1 for c in components.values()):
            break
        merged: list[Group] = []
        for r, idx in sorted(components.items(), key=lambda kv: min(kv[1])):
            if len(idx) == 1:
                merged.append(groups[idx[0]])
                continue
            parts = [groups[i] for i in idx]
            label, description = names.get(r) or next(
                ((lab, d) for k, (lab, d) in names.items() if _root(parent, k) == r), (parts[0].label or "", ""))
            weights = np.array([p.size for p in parts], dtype=np.float64)
            cen = (np.stack([p.centroid for p in parts]) * weights[:, None]).sum(0)
            cen = (cen / max(np.linalg.norm(cen), 1e-12)).astype(np.float32)
            members = sorted({m for p in parts for m in p.members})
            merged.append(Group(sorted(x for p in parts for x in p.raw), int(weights.sum()), cen, label, description,
                                sorted({m for p in parts for m in _shown(p, seed)}), members, True))
            report.merged += len(idx) - 1
        groups = merged
    return groups


class MergeStage(Stage):
    """Raw (k-means) clusters and their names → final clusters, near-duplicates merged."""

    name = "merge"
    version = STAGE_VERSION
    reads = (RAW["clusters"], RAW["assignments"], RAW["labels"], *RAW_CENTROIDS,
             "features.parquet", "strings.parquet", "embeddings.npy")
    writes = (*OUT.values(), "merges.parquet")
    config = ("merge", "seed", "min_cluster_size")
    prompt = "merge"
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        raw = ctx.read_table(RAW["clusters"])
        labels = labels_of(ctx.read_table(RAW["labels"]))
        members = ClusterMembers(ctx.read_table("features.parquet", ["text"]).column("text"),
                                 ctx.read_table(RAW["assignments"], ["cluster_id"]).column("cluster_id"),
                                 raw.num_rows)
        report = MergeReport()
        seed = ctx.config.seed
        final: dict[str, list[Group]] = {}
        for kind in PIECE_KINDS:
            rows = [r for r in raw.to_pylist() if r["kind"] == kind]
            if not rows:
                continue
            cents = np.load(ctx.path(f"raw_centroids_{kind}.npy"))
            groups = [Group([r["cluster_id"]], r["size"], cents[r["cluster"]], labels[r["cluster_id"]]["label"],
                            labels[r["cluster_id"]]["description"], labels[r["cluster_id"]]["sample"],
                            sample_members(members[r["cluster_id"]], POOL, seed * 1_000_003 + r["cluster_id"])
                            if ctx.config.merge else []) for r in rows]
            final[kind] = (merge_kind(kind, groups, ctx.engine, ctx.prompt, ctx.config.seed, report)
                           if ctx.config.merge else groups)
        counts: MergeCounts = {**write_final(ctx, raw, labels, final), "raw_clusters": raw.num_rows,
                               "merged": report.merged, "checks": report.calls, "failed": report.failed,
                               "rounds": report.rounds}
        if report.failed_by_reason:
            counts["reasons"] = dict(report.failed_by_reason)
        return StageResult(counts, complete=report.failed == 0)


def write_final(ctx: StageContext, raw: pa.Table, labels: list[LabelRow],
                final: dict[str, list[Group]]) -> FinalCounts:
    """Every feature to its nearest final centroid; the final cluster table, labels,
    centroids, thresholds and the raw → final mapping."""
    features = ctx.read_table("features.parquet", ["feature_id", "piece_id", "transcript_id", "kind"])
    strings = ctx.read_table("strings.parquet").column("text")
    with pq.ParquetFile(ctx.path("features.parquet")) as pf:
        sids = string_ids((b.column(0) for b in pf.iter_batches(batch_size=1 << 20, columns=["text"])),
                          pf.metadata.num_rows, strings)
    cluster_of = np.full(features.num_rows, -1, dtype=np.int64)
    sim_of = np.zeros(features.num_rows, dtype=np.float32)
    tables, merge_rows = [], []
    label_rows: list[LabelRow] = []
    offset = 0
    for kind in PIECE_KINDS:
        groups = final.get(kind)
        if not groups:
            continue
        mask = pc.equal(features.column("kind"), kind).to_numpy(zero_copy_only=False)
        kind_sids, inverse = np.unique(sids[mask], return_inverse=True)
        cents = np.stack([g.centroid for g in groups]).astype(np.float32)
        best, sims = nearest(read_rows(ctx.path("embeddings.npy"), kind_sids), cents)
        used = np.bincount(best, minlength=len(groups)) > 0  # a group no string is nearest to is gone
        renumber = np.cumsum(used) - 1
        local = renumber[best][inverse]
        sim = sims[inverse]
        groups = [g for g, u in zip(groups, used, strict=True) if u]
        k = len(groups)
        cluster_of[mask] = local + offset
        sim_of[mask] = sim
        save_matrix(ctx.output(OUT[f"centroids_{kind}"]), cents[used])
        size = np.bincount(local, minlength=k)
        floor = member_floors(local, sim, k)
        tables.append(pa.table({
            "cluster_id": pa.array(np.arange(offset, offset + k), pa.int64()),
            "kind": pa.array([kind] * k, pa.string()),
            "cluster": pa.array(np.arange(k), pa.int64()),
            "size": pa.array(size, pa.int64()),
            "distinct": pa.array(np.bincount(renumber[best], minlength=k), pa.int64()),
            "small": pa.array(size < ctx.config.min_cluster_size),
            "min_similarity": pa.array(floor, pa.float32()),
        }))
        for i, g in enumerate(groups):
            if g.merged:
                label_rows.append({"cluster_id": offset + i, "label": g.label, "description": g.description,
                                   "sample": g.sample, "status": "ok"})
            else:
                label_rows.append({**labels[g.raw[0]], "cluster_id": offset + i})
            for r in g.raw:
                merge_rows.append({"raw_cluster_id": r, "kind": kind, "cluster_id": offset + i,
                                   "raw_label": labels[r]["label"], "label": g.label, "merged": g.merged})
        offset += k
    if not tables:
        raise FeatdiscoError("no clusters to merge: the cluster stage wrote none")
    gone = sorted(set(raw.column("cluster_id").to_pylist()) - {m["raw_cluster_id"] for m in merge_rows})
    for r in gone:  # its members all went to other clusters: say where it went, not nothing
        merge_rows.append({"raw_cluster_id": r, "kind": raw.column("kind")[r].as_py(), "cluster_id": -1,
                           "raw_label": labels[r]["label"], "label": None, "merged": False})
    assignments = pa.table({"feature_id": features.column("feature_id"), "kind": features.column("kind"),
                            "cluster_id": pa.array(cluster_of, pa.int64()),
                            "similarity": pa.array(sim_of, pa.float32())})
    spread = pa.table({"cluster_id": assignments.column("cluster_id"), "piece_id": features.column("piece_id"),
                       "transcript_id": features.column("transcript_id")}) \
        .group_by("cluster_id").aggregate([("piece_id", "count_distinct"), ("transcript_id", "count_distinct")])
    clusters = pa.concat_tables(tables).join(spread, "cluster_id", join_type="left outer").sort_by("cluster_id")
    clusters = clusters.rename_columns([{"piece_id_count_distinct": "pieces",
                                         "transcript_id_count_distinct": "transcripts"}.get(c, c)
                                        for c in clusters.column_names])
    ctx.write_table(OUT["assignments"], assignments)
    ctx.write_table(OUT["clusters"], clusters)
    ctx.write_table(OUT["labels"], pa.Table.from_pylist(label_rows, schema=LABELS_SCHEMA))
    ctx.write_table("merges.parquet", pa.Table.from_pylist(merge_rows, schema=MERGES_SCHEMA))
    return {"clusters": clusters.num_rows, "emptied": len(gone)}
