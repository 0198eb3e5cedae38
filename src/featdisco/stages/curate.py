"""The curate stage: the researcher's edits (``curation.json``) applied to the named
partition, so every later stage — rating, the cluster table, the report, the analyses and
``transform`` — sees the curated clusters, numbered with stable ids.

It comes after naming (and after any automatic merging) because researchers edit the
clusters they see: it reads the partition and labels that came before it (:data:`SOURCE`)
and writes the ones the rest of the run reads (``assignments.parquet``,
``clusters_base.parquet``, ``centroids_*.npy``, ``labels.parquet``). ``curation.json`` is a
declared input, so an edit reruns this stage and, through the content of what it writes,
exactly what depends on it; a rerun that reclusters reapplies every edit.

An edit moves only the features of the clusters it names: a merge is the union of its
clusters, a split re-partitions only the split cluster's members, every other cluster keeps
its members, centroid and label. (Nearest centroid stays the rule for *new* data in
``transform``; a merged cluster's centroid is the mean of its members.) Merged and split
clusters are named with the run's naming prompt (the LLM cache answers any it has named
before). The final clusters are numbered by the id registry (:mod:`featdisco.cluster_ids`):
a cluster keeps its id, a new one gets an id never used in the run, and an edited
cluster's old ids are retired with where they went. Renames and hides go to the assemble
stage in ``curation_applied.json``, with the fate of every edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import ArrayLike, NDArray

from featdisco.cluster_ids import MEMBERS, REGISTRY, Registry, find_by_pieces
from featdisco.curation import (
    APPLIED,
    CURATION,
    ClusterRef,
    Curator,
    Edit,
    KindPartition,
    Outcome,
    Part,
    applied_json,
    counts,
    read_edits,
)
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.cluster import string_ids
from featdisco.stages.kmeans import SphericalKMeans, member_floors
from featdisco.stages.name import LABELS_SCHEMA, LabelRow, labels_of, name_clusters
from featdisco.storage.matrix import load_matrix, read_rows, save_matrix
from featdisco.transcripts.model import PIECE_KINDS

STAGE_VERSION = 3  # 2: merges are unions, nobody else moves; stable ids from the registry; 3: a rename a later edit overrode is stale
# What the merge stage wrote → what the run reads after curation.
SOURCE = {"merged_assignments.parquet": "assignments.parquet", "merged_clusters.parquet": "clusters_base.parquet",
          "merged_labels.parquet": "labels.parquet",
          **{f"merged_centroids_{k}.npy": f"centroids_{k}.npy" for k in PIECE_KINDS}}  # from the merge stage
_SRC = {v: k for k, v in SOURCE.items()}  # final name → source name


@dataclass(slots=True)
class _Features:
    """The run's features as the curator saw them: each one's string id and kind, the
    distinct strings, and each kind's offset from local cluster number to cluster id."""

    feats: pa.Table  # feature_id, piece_id, transcript_id, kind
    sids: NDArray[np.int64]
    kinds: NDArray[Any]
    strings: pa.ChunkedArray
    offsets: dict[str, int]


@dataclass(slots=True)
class _Parts:
    """The curated parts of every kind in one global numbering: each feature's part and
    similarity to its centroid, and per part its (kind, part), centroid and distinct strings."""

    part_of_feature: NDArray[np.int64]
    sim_of: NDArray[np.float32]
    entries: list[tuple[str, int]] = field(default_factory=list)  # global part index → (kind, part)
    cents: list[NDArray[np.float32]] = field(default_factory=list)
    distinct: list[int] = field(default_factory=list)


class CurateStage(Stage):
    name = "curate"
    version = STAGE_VERSION
    reads = (*SOURCE, CURATION, "features.parquet", "strings.parquet", "embeddings.npy")
    state = (REGISTRY, MEMBERS)  # the id registry: which id each cluster had, so it keeps it
    writes = (*SOURCE.values(), APPLIED, REGISTRY, MEMBERS)
    config = ("seed", "min_cluster_size", "sample_size")
    prompt = "name"  # merged and split clusters are named again
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        edits = read_edits(ctx.path(CURATION))
        registry = Registry.read(ctx.path(REGISTRY), ctx.path(MEMBERS))
        curator, raw = self._curator(ctx, edits, registry)
        outcomes = curator.apply(edits)
        for o in outcomes:
            if o.status == "stale":
                ctx.log(f"curate: edit {o.index} ({o.edit.describe()}) is stale: {o.reason}")
        tally = counts(outcomes)
        id_of, failed = self._write_partition(ctx, curator, raw, registry, outcomes)
        if failed:
            tally["naming_failed"] = failed
        if registry.retired():
            tally["retired_ids"] = len(registry.retired())
        for o in outcomes:
            o.now = [id_of[(kind, p)] for kind, p in o.parts if (kind, p) in id_of]
        renamed: dict[int, str] = {}
        hidden: list[int] = []
        for kind, kp in curator.kinds.items():
            for p, part in enumerate(kp.parts):
                if (i := id_of.get((kind, p))) is not None:
                    if part.label:
                        renamed[i] = part.label
                    if part.hidden:
                        hidden.append(i)
        ctx.output(APPLIED).write_bytes(orjson.dumps(applied_json(outcomes, renamed, hidden),
                                                     option=orjson.OPT_INDENT_2))
        ctx.output(REGISTRY).write_bytes(registry.to_bytes())
        ctx.write_table(MEMBERS, registry.members)
        return StageResult(tally, complete=failed == 0)

    def _curator(self, ctx: StageContext, edits: list[Edit], registry: Registry
                 ) -> tuple[Curator, _Features]:
        """Each kind's distinct strings and the cluster each is in before curation."""
        strings = ctx.read_table("strings.parquet").column("text")
        # Feature texts are matched to their strings a block at a time and not kept: the text
        # column is the bulk of a big run's features table.
        feats = ctx.read_table("features.parquet", ["feature_id", "piece_id", "transcript_id", "kind"])
        with pq.ParquetFile(ctx.path("features.parquet")) as pf:
            sids = string_ids((b.column(0) for b in pf.iter_batches(batch_size=1 << 20, columns=["text"])),
                              pf.metadata.num_rows, strings)
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

        def by_id(ref: ClusterRef, kp: KindPartition) -> int | None:
            mask = kinds_col == ref.kind
            part = kp.part_of[np.searchsorted(kp.sids, sids[mask])]
            return find_by_pieces(registry, ref.id, pa.table({
                "part": pa.array(part, pa.int64()), "piece_id": feats.column("piece_id").filter(pa.array(mask))}))

        return Curator(kinds, sid_of, split, by_id), _Features(feats, sids, kinds_col, strings, offset_of)

    def _write_partition(self, ctx: StageContext, curator: Curator, raw: _Features, registry: Registry,
                         outcomes: list[Outcome]) -> tuple[dict[tuple[str, int], int], int]:
        """The curated partition, numbered by the registry. Each string stays in the part the
        edits left it in (a merge is a union; nobody else moves); unchanged clusters keep
        their centroid, merged and split ones get the weighted mean of their members'
        embeddings. Returns (kind, part) → final id, and the failed naming calls."""
        parts = _curated_parts(ctx, curator, raw)
        barred, why = _barred_ids(outcomes, {e: g for g, e in enumerate(parts.entries)})
        ids = registry.assign(pa.table({"part": pa.array(parts.part_of_feature, pa.int64()),
                                        "sid": pa.array(raw.sids), "piece_id": raw.feats.column("piece_id")}),
                              [k for k, _ in parts.entries], barred, why, raw.strings)
        order = np.argsort(ids, kind="stable")  # the tables list clusters by id
        row_of = _write_centroids(ctx, curator, parts, order, len(ids))
        _write_assignments(ctx, raw, parts, ids)
        _write_clusters(ctx, raw, parts, ids, order, row_of)
        failed = _write_labels(ctx, curator, raw, parts, ids, order, registry)
        return {e: int(ids[g]) for g, e in enumerate(parts.entries)}, failed


def _curated_parts(ctx: StageContext, curator: Curator, raw: _Features) -> _Parts:
    """Every kind's live parts (a part no string is in is gone), their centroids (kept, or the
    weighted mean of the members' embeddings), and each feature's part and similarity."""
    emb = ctx.path("embeddings.npy")
    parts = _Parts(np.full(raw.feats.num_rows, -1, np.int64), np.zeros(raw.feats.num_rows, np.float32))
    for kind, kp in curator.kinds.items():
        raw_cent = load_matrix(ctx.path(_SRC[f"centroids_{kind}.npy"]), mmap=True)
        live = [p for p in kp.order if (kp.part_of == p).any()]
        local = np.full(len(kp.parts), -1, np.int64)
        local[live] = np.arange(len(live))
        vecs = read_rows(emb, kp.sids)
        kind_cents = np.zeros((len(live), raw_cent.shape[1]), np.float32)
        for i, part in enumerate(live):
            p = kp.parts[part]
            if p.raw is not None:
                kind_cents[i] = raw_cent[p.raw]
                continue
            members = kp.part_of == part
            mean = (vecs[members] * kp.weights[members, None].astype(np.float32)).sum(axis=0)
            kind_cents[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        str_local = local[kp.part_of]
        str_sim = np.einsum("ij,ij->i", vecs, kind_cents[str_local])
        mask = raw.kinds == kind
        pos = np.searchsorted(kp.sids, raw.sids[mask])
        parts.part_of_feature[mask] = len(parts.entries) + str_local[pos]
        parts.sim_of[mask] = str_sim[pos]
        parts.entries.extend((kind, p) for p in live)
        parts.cents.extend(kind_cents)
        parts.distinct.extend(np.bincount(str_local, minlength=len(live)).tolist())
    return parts


def _barred_ids(outcomes: list[Outcome], index_of: dict[tuple[str, int], int]
                ) -> tuple[dict[int, set[int]], dict[int, str]]:
    """The ids a merged or split part may not keep (those of the clusters its edit named), and
    why each such id was retired."""
    barred: dict[int, set[int]] = {}
    why: dict[int, str] = {}
    for o in outcomes:
        if o.status == "applied" and o.edit.op in ("merge", "split"):
            for kp_key in o.parts:
                if kp_key in index_of:
                    barred.setdefault(index_of[kp_key], set()).update(c.id for c in o.edit.clusters)
            why.update({c.id: f"{o.edit.op} by edit {o.index}" for c in o.edit.clusters})
    return barred, why


def _write_centroids(ctx: StageContext, curator: Curator, parts: _Parts, order: NDArray[np.intp],
                     n: int) -> NDArray[np.int64]:
    """Each kind's centroids in id order; returns each part's centroid row within its kind."""
    row_of = np.empty(n, np.int64)
    for kind in curator.kinds:
        mine = [g for g in order if parts.entries[g][0] == kind]
        row_of[mine] = np.arange(len(mine))
        save_matrix(ctx.output(f"centroids_{kind}.npy"),
                    np.stack([parts.cents[g] for g in mine]) if mine else np.zeros((0, 1), np.float32))
    return row_of


def _write_assignments(ctx: StageContext, raw: _Features, parts: _Parts, ids: NDArray[np.int64]) -> None:
    cluster_of = ids[parts.part_of_feature]
    assignments = pa.table({"feature_id": raw.feats.column("feature_id"), "kind": raw.feats.column("kind"),
                            "cluster_id": pa.array(cluster_of, pa.int64()),
                            "similarity": pa.array(parts.sim_of, pa.float32())})
    ctx.write_table("assignments.parquet", assignments)


def _write_clusters(ctx: StageContext, raw: _Features, parts: _Parts, ids: NDArray[np.int64],
                    order: NDArray[np.intp], row_of: NDArray[np.int64]) -> None:
    """The cluster table (sizes, distinct strings, pieces, transcripts, similarity floor) in
    id order, with the source table's schema."""
    part_of_feature = parts.part_of_feature
    size = np.bincount(part_of_feature, minlength=len(ids))
    spread = pa.table({"part": pa.array(part_of_feature, pa.int64()), "piece_id": raw.feats.column("piece_id"),
                       "transcript_id": raw.feats.column("transcript_id")}) \
        .group_by("part").aggregate([("piece_id", "count_distinct"), ("transcript_id", "count_distinct")])
    pieces, transcripts = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64)
    at = spread.column("part").to_numpy()
    pieces[at] = spread.column("piece_id_count_distinct").to_numpy()
    transcripts[at] = spread.column("transcript_id_count_distinct").to_numpy()
    cols: dict[str, ArrayLike] = {
        "cluster_id": ids[order], "kind": [parts.entries[g][0] for g in order], "cluster": row_of[order],
        "size": size[order], "distinct": np.asarray(parts.distinct, np.int64)[order],
        "small": size[order] < int(ctx.config.min_cluster_size), "pieces": pieces[order],
        "transcripts": transcripts[order],
        "min_similarity": member_floors(part_of_feature, parts.sim_of, len(ids))[order]}
    schema = pq.read_schema(ctx.path(_SRC["clusters_base.parquet"]))
    ctx.write_table("clusters_base.parquet",
                    pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema}, schema=schema))


def _write_labels(ctx: StageContext, curator: Curator, raw: _Features, parts: _Parts, ids: NDArray[np.int64],
                  order: NDArray[np.intp], registry: Registry) -> int:
    """Labels: the source's for unchanged clusters, the namer's for merged and split ones;
    returns the failed naming calls."""
    source = {r["cluster_id"]: r for r in labels_of(ctx.read_table(_SRC["labels.parquet"]))}
    rows: list[LabelRow] = []
    todo: list[tuple[int, str, list[str]]] = []
    for g in order:
        kind, part = parts.entries[g]
        p, cid = curator.kinds[kind].parts[part], int(ids[g])
        if p.raw is not None:
            rows.append({**source[raw.offsets[kind] + p.raw], "cluster_id": cid})
        else:
            kp = curator.kinds[kind]
            todo.append((cid, kind, pc.take(raw.strings, pa.array(kp.sids[kp.part_of == part])).to_pylist()))
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
    registry.label({int(r["cluster_id"]): r.get("label") for r in rows})
    return failed
