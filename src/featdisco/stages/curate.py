"""The curate stage: the researcher's edits (``curation.json``) applied to the named
partition, so every later stage — rating, the cluster table, the report, the analyses and
``transform`` — sees the curated clusters.

It comes after naming (and after any automatic merging) because researchers edit the
clusters they see: it reads the partition and labels that came before it (:data:`SOURCE`)
and writes the ones the rest of the run reads (``assignments.parquet``,
``clusters_base.parquet``, ``centroids_*.npy``, ``labels.parquet``). ``curation.json`` is a
declared input, so an edit reruns this stage and, through the content of what it writes,
exactly what depends on it; a rerun that reclusters reapplies every edit. With no edit that
changes the partition the source artefacts are copied byte for byte, so nothing downstream
reruns. After a merge or split every string of the kind goes to its nearest final centroid
(the rule the cluster stage and ``transform`` use), and the new clusters are named with the
run's naming prompt (the LLM cache answers any it has named before). Renames and hides go
to the assemble stage in ``curation_applied.json``, with the fate of every edit.
"""

from __future__ import annotations

import itertools
import shutil
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from featdisco.curation import (
    APPLIED,
    CURATION,
    Curator,
    Edit,
    KindPartition,
    Part,
    applied_json,
    counts,
    read_edits,
)
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.cluster import string_ids
from featdisco.stages.kmeans import SphericalKMeans, nearest
from featdisco.stages.merge import THRESHOLD_PERCENTILE
from featdisco.stages.name import LABELS_SCHEMA, name_clusters
from featdisco.storage.matrix import load_matrix, read_rows, save_matrix
from featdisco.transcripts.model import PIECE_KINDS

STAGE_VERSION = 1
# What the merge stage wrote → what the run reads after curation.
SOURCE = {"merged_assignments.parquet": "assignments.parquet", "merged_clusters.parquet": "clusters_base.parquet",
          "merged_labels.parquet": "labels.parquet",
          **{f"merged_centroids_{k}.npy": f"centroids_{k}.npy" for k in PIECE_KINDS}}  # from the merge stage
_SRC = {v: k for k, v in SOURCE.items()}  # final name → source name


class CurateStage(Stage):
    name = "curate"
    version = STAGE_VERSION
    reads = (*SOURCE, CURATION, "features.parquet", "strings.parquet", "embeddings.npy")
    writes = (*SOURCE.values(), APPLIED)
    config = ("seed", "min_cluster_size", "sample_size")
    prompt = "name"  # merged and split clusters are named again
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        edits = read_edits(ctx.path(CURATION))
        if not edits:
            self._copy(ctx)
            return StageResult({"edits": 0})
        curator, raw = self._curator(ctx, edits)
        outcomes = curator.apply(edits)
        for o in outcomes:
            if o.status == "stale":
                ctx.log(f"curate: edit {o.index} ({o.edit.describe()}) is stale: {o.reason}")
        result = StageResult(counts(outcomes))
        if curator.changed:
            final, failed = self._write_partition(ctx, curator, raw)
            result.complete = failed == 0
            if failed:
                result.counts["naming_failed"] = failed
        else:
            self._copy(ctx)
            final = {kind: {p: (None, c) for c, p in enumerate(kp.order)} for kind, kp in curator.kinds.items()}
        offsets = _offsets({k: len(v) for k, v in final.items()})

        def final_id(kind: str, part: int) -> int | None:
            hit = final[kind].get(part)
            return None if hit is None or hit[1] is None else offsets[kind] + hit[1]

        for o in outcomes:
            o.now = [i for kind, p in o.parts if (i := final_id(kind, p)) is not None]
        renamed: dict[int, str] = {}
        hidden: list[int] = []
        for kind, kp in curator.kinds.items():
            for p, part in enumerate(kp.parts):
                if (i := final_id(kind, p)) is not None:
                    if part.label:
                        renamed[i] = part.label
                    if part.hidden:
                        hidden.append(i)
        ctx.output(APPLIED).write_bytes(orjson.dumps(applied_json(outcomes, renamed, hidden),
                                                     option=orjson.OPT_INDENT_2))
        return result

    @staticmethod
    def _copy(ctx: StageContext) -> None:
        for src, dst in SOURCE.items():
            if ctx.exists(src):
                shutil.copyfile(ctx.path(src), ctx.output(dst))

    def _curator(self, ctx: StageContext, edits: list[Edit]) -> tuple[Curator, dict[str, Any]]:
        """Each kind's distinct strings and the cluster each is in before curation."""
        strings = ctx.read_table("strings.parquet").column("text")
        feats = ctx.read_table("features.parquet", ["feature_id", "piece_id", "transcript_id", "kind", "text"])
        sids = string_ids([feats.column("text")], feats.num_rows, strings)
        assign = ctx.read_table(_SRC["assignments.parquet"])
        base = ctx.read_table(_SRC["clusters_base.parquet"])
        base_kinds = base.column("kind").to_pylist()
        offset_of = {k: int(c) - int(loc) for k, c, loc in zip(
            base_kinds, base.column("cluster_id").to_pylist(), base.column("cluster").to_pylist(), strict=True)}
        kinds_col = feats.column("kind").to_numpy(zero_copy_only=False)
        cid = assign.column("cluster_id").to_numpy()
        kinds: dict[str, KindPartition] = {}
        for kind in PIECE_KINDS:
            mask = kinds_col == kind
            if not mask.any() or kind not in offset_of:
                continue
            uniq, first, weights = np.unique(sids[mask], return_index=True, return_counts=True)
            k = base_kinds.count(kind)
            kinds[kind] = KindPartition(uniq, weights, (cid[mask][first] - offset_of[kind]).astype(np.int64),
                                        [Part(i) for i in range(k)], list(range(k)))
        # every feature text the edits name, looked up once
        texts = sorted({t for e in edits for c in e.clusters for t in c.members})
        found = pc.index_in(pa.array(texts, pa.string()), value_set=strings).to_pylist()
        sid_of = {t: int(s) for t, s in zip(texts, found, strict=True) if s is not None}
        emb, seed = ctx.path("embeddings.npy"), int(ctx.config.seed)

        def split(member_sids: NDArray[np.int64], weights: NDArray[np.int64], k: int) -> NDArray[np.int64]:
            x = read_rows(emb, member_sids)
            model = SphericalKMeans(n_clusters=k, seed=seed, min_cluster_size=1)
            model.fit(x, sample_weight=weights.astype(np.float32))
            return model.assign(x)[0]

        return Curator(kinds, sid_of, split), {"feats": feats, "sids": sids, "assign": assign,
                                               "kinds": kinds_col, "strings": strings, "offsets": offset_of}

    def _write_partition(self, ctx: StageContext, curator: Curator, raw: dict[str, Any]
                         ) -> tuple[dict[str, dict[int, tuple[Any, int | None]]], int]:
        """The curated partition. Unchanged clusters keep their centroid; merged and split
        ones get the weighted mean of their members' embeddings; then every string of the
        kind goes to its nearest centroid. Returns part → (centroid row, final index or
        None when no string is nearest to it) per kind, and the failed naming calls."""
        feats, sids, kinds_col, strings = raw["feats"], raw["sids"], raw["kinds"], raw["strings"]
        emb = ctx.path("embeddings.npy")
        labels = {r["cluster_id"]: r for r in ctx.read_table(_SRC["labels.parquet"]).to_pylist()}
        cluster_of = np.full(feats.num_rows, -1, np.int64)
        sim_of = np.zeros(feats.num_rows, np.float32)
        final: dict[str, dict[int, tuple[Any, int | None]]] = {}
        kept: dict[str, list[int]] = {}
        for kind, kp in curator.kinds.items():
            raw_cent = load_matrix(ctx.path(_SRC[f"centroids_{kind}.npy"]), mmap=True)
            cents = np.zeros((len(kp.order), raw_cent.shape[1]), np.float32)
            for i, part in enumerate(kp.order):
                p = kp.parts[part]
                if p.raw is not None:
                    cents[i] = raw_cent[p.raw]
                    continue
                members = np.flatnonzero(kp.part_of == part)
                mean = (read_rows(emb, kp.sids[members]) * kp.weights[members, None].astype(np.float32)).sum(axis=0)
                cents[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            best, sims = nearest(read_rows(emb, kp.sids), cents)
            used = np.bincount(best, minlength=len(cents)) > 0
            renumber = np.cumsum(used) - 1
            final[kind] = {part: (i, int(renumber[i]) if used[i] else None) for i, part in enumerate(kp.order)}
            kept[kind] = [part for part in kp.order if final[kind][part][1] is not None]
            kp.part_of = np.asarray(kp.order, np.int64)[best]  # where each string now is
            save_matrix(ctx.output(f"centroids_{kind}.npy"), cents[used])
            mask = kinds_col == kind
            pos = np.searchsorted(kp.sids, sids[mask])
            cluster_of[mask] = renumber[best][pos]
            sim_of[mask] = sims[pos]
        offsets = _offsets({k: len(v) for k, v in kept.items()})
        for kind in kept:
            cluster_of[kinds_col == kind] += offsets[kind]
        assignments = pa.table({"feature_id": feats.column("feature_id"), "kind": feats.column("kind"),
                                "cluster_id": pa.array(cluster_of, pa.int64()),
                                "similarity": pa.array(sim_of, pa.float32())})
        ctx.write_table("assignments.parquet", assignments)
        ctx.write_table("clusters_base.parquet", base_table(
            assignments, feats, sids, {k: len(v) for k, v in kept.items()}, int(ctx.config.min_cluster_size),
            pq.read_schema(ctx.path(_SRC["clusters_base.parquet"]))))
        # labels: the source's for unchanged clusters, the namer's for merged and split ones
        rows: list[dict[str, Any]] = []
        todo: list[tuple[int, str, list[str]]] = []
        for kind, parts in kept.items():
            kp = curator.kinds[kind]
            for i, part in enumerate(parts):
                cid, p = offsets[kind] + i, kp.parts[part]
                if p.raw is not None:
                    rows.append({**labels[raw["offsets"][kind] + p.raw], "cluster_id": cid})
                else:
                    members = kp.sids[kp.part_of == part]
                    todo.append((cid, kind, pc.take(strings, pa.array(members)).to_pylist()))
                    rows.append({"cluster_id": cid})
        failed = 0
        if todo:
            named, report = name_clusters([t[0] for t in todo], [t[1] for t in todo], [t[2] for t in todo],
                                          ctx.engine, ctx.prompt, sample_size=int(ctx.config.sample_size),
                                          seed=int(ctx.config.seed))
            by_id = {r["cluster_id"]: r for r in named.to_pylist()}
            rows = [by_id.get(r["cluster_id"], r) for r in rows]
            failed = report.failed
        ctx.write_table("labels.parquet", pa.Table.from_pylist(rows, schema=LABELS_SCHEMA))
        return final, failed


def _offsets(sizes: dict[str, int]) -> dict[str, int]:
    """Each kind's first cluster id: kinds numbered in PIECE_KINDS order."""
    out: dict[str, int] = {}
    offset = 0
    for kind in PIECE_KINDS:
        if kind in sizes:
            out[kind], offset = offset, offset + sizes[kind]
    return out


def base_table(assignments: pa.Table, feats: pa.Table, sids: NDArray[np.int64], sizes: dict[str, int],
               min_cluster_size: int, schema: pa.Schema) -> pa.Table:
    """The per-cluster counts of a curated partition — size, distinct strings, small,
    pieces, transcripts (and ``min_similarity`` when the source table has it) — in the
    source table's schema."""
    cid = assignments.column("cluster_id").to_numpy()
    n = sum(sizes.values())
    size = np.bincount(cid, minlength=n)
    distinct = np.bincount(np.unique(np.stack([cid, sids]), axis=1)[0], minlength=n)
    spread = pa.table({"cluster_id": assignments.column("cluster_id"), "piece_id": feats.column("piece_id"),
                       "transcript_id": feats.column("transcript_id")}) \
        .group_by("cluster_id").aggregate([("piece_id", "count_distinct"), ("transcript_id", "count_distinct")])
    pieces, transcripts = np.zeros(n, np.int64), np.zeros(n, np.int64)
    ids = spread.column("cluster_id").to_numpy()
    pieces[ids] = spread.column("piece_id_count_distinct").to_numpy()
    transcripts[ids] = spread.column("transcript_id_count_distinct").to_numpy()
    cols: dict[str, Any] = {
        "cluster_id": np.arange(n), "kind": [k for k in PIECE_KINDS if k in sizes for _ in range(sizes[k])],
        "cluster": np.concatenate([np.arange(sizes[k]) for k in PIECE_KINDS if k in sizes]),
        "size": size, "distinct": distinct, "small": size < min_cluster_size, "pieces": pieces,
        "transcripts": transcripts}
    if "min_similarity" in schema.names:
        sim = assignments.column("similarity").to_numpy()
        order = np.argsort(cid, kind="stable")
        bounds = np.searchsorted(cid[order], np.arange(n + 1))
        cols["min_similarity"] = [float(np.percentile(sim[order[a:b]], THRESHOLD_PERCENTILE)) if b > a else 0.0
                                  for a, b in itertools.pairwise(bounds)]
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema}, schema=schema)
