"""The curate stage: the researcher's edits (``curation.json``) applied to the k-means
partition, so every later stage — naming, rating, the cluster table, the report, the
analyses and ``transform`` — sees the curated clusters.

It reads the cluster stage's ``kmeans_*`` artefacts and writes the partition the rest of
the run reads (``assignments.parquet``, ``clusters_base.parquet``, ``centroids_*.npy``).
``curation.json`` is a declared input, so an edit reruns this stage and, through the
content of what it writes, exactly what depends on it; a rerun of clustering reapplies
every edit. With no edit (or none that changes the partition) the k-means artefacts are
copied byte for byte, so nothing downstream reruns. Renames and hides go to the assemble
stage in ``curation_applied.json``, with the fate of every edit (applied or stale).
"""

from __future__ import annotations

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
from featdisco.stages.kmeans import SphericalKMeans
from featdisco.storage.matrix import load_matrix, read_rows, save_matrix
from featdisco.transcripts.model import PIECE_KINDS

STAGE_VERSION = 1
RAW = {"kmeans_assignments.parquet": "assignments.parquet", "kmeans_clusters.parquet": "clusters_base.parquet",
       **{f"kmeans_centroids_{k}.npy": f"centroids_{k}.npy" for k in PIECE_KINDS}}


class CurateStage(Stage):
    name = "curate"
    version = STAGE_VERSION
    reads = (*RAW, CURATION, "features.parquet", "strings.parquet", "embeddings.npy")
    writes = (*RAW.values(), APPLIED)
    config = ("seed", "min_cluster_size")

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
        final = {kind: {part: i for i, part in enumerate(kp.order)} for kind, kp in curator.kinds.items()}
        offsets: dict[str, int] = {}
        offset = 0
        for kind in PIECE_KINDS:
            if kind in final:
                offsets[kind], offset = offset, offset + len(final[kind])
        for o in outcomes:
            o.now = [offsets[kind] + final[kind][p] for kind, p in o.parts if p in final[kind]]
        renamed = {offsets[k] + final[k][p]: part.label for k, kp in curator.kinds.items()
                   for p, part in enumerate(kp.parts) if part.label and p in final[k]}
        hidden = [offsets[k] + final[k][p] for k, kp in curator.kinds.items()
                  for p, part in enumerate(kp.parts) if part.hidden and p in final[k]]
        if curator.changed:
            self._write_partition(ctx, curator, raw, final, offsets)
        else:
            self._copy(ctx)
        ctx.output(APPLIED).write_bytes(orjson.dumps(applied_json(outcomes, renamed, hidden),
                                                     option=orjson.OPT_INDENT_2))
        return StageResult(counts(outcomes))

    @staticmethod
    def _copy(ctx: StageContext) -> None:
        for src, dst in RAW.items():
            if ctx.exists(src):
                shutil.copyfile(ctx.path(src), ctx.output(dst))

    def _curator(self, ctx: StageContext, edits: list[Edit]) -> tuple[Curator, dict[str, Any]]:
        """Each kind's distinct strings and their k-means cluster, and the raw artefacts."""
        strings = ctx.read_table("strings.parquet").column("text")
        feats = ctx.read_table("features.parquet", ["feature_id", "piece_id", "transcript_id", "kind", "text"])
        sids = string_ids([feats.column("text")], feats.num_rows, strings)
        assign = ctx.read_table("kmeans_assignments.parquet")
        base = ctx.read_table("kmeans_clusters.parquet")
        offset_of = {k: int(c) - int(loc) for k, c, loc in zip(
            base.column("kind").to_pylist(), base.column("cluster_id").to_pylist(),
            base.column("cluster").to_pylist(), strict=True)}
        kinds_col = feats.column("kind").to_numpy(zero_copy_only=False)
        cid = assign.column("cluster_id").to_numpy()
        kinds: dict[str, KindPartition] = {}
        for kind in PIECE_KINDS:
            mask = kinds_col == kind
            if not mask.any() or kind not in offset_of:
                continue
            uniq, first, weights = np.unique(sids[mask], return_index=True, return_counts=True)
            local = cid[mask][first] - offset_of[kind]
            k = base.column("kind").to_pylist().count(kind)
            kinds[kind] = KindPartition(uniq, weights, local.astype(np.int64),
                                        [Part(i) for i in range(k)], list(range(k)))
        # every feature text the edits name, looked up once
        texts = sorted({t for e in edits for c in e.clusters for t in c.members})
        found = pc.index_in(pa.array(texts, pa.string()), value_set=strings).to_pylist()
        sid_of = {t: int(s) for t, s in zip(texts, found, strict=True) if s is not None}
        emb = ctx.path("embeddings.npy")
        seed = int(ctx.config.seed)

        def split(member_sids: NDArray[np.int64], weights: NDArray[np.int64], k: int) -> NDArray[np.int64]:
            x = read_rows(emb, member_sids)
            model = SphericalKMeans(n_clusters=k, seed=seed, min_cluster_size=1)
            model.fit(x, sample_weight=weights.astype(np.float32))
            return model.assign(x)[0]

        return Curator(kinds, sid_of, split), {"feats": feats, "sids": sids, "assign": assign,
                                               "kinds": kinds_col}

    def _write_partition(self, ctx: StageContext, curator: Curator, raw: dict[str, Any],
                         final: dict[str, dict[int, int]], offsets: dict[str, int]) -> None:
        """The curated assignments, cluster table and centroids. Unchanged clusters keep
        their centroid and similarities; merged and split ones get the weighted mean of
        their members' embeddings, and each member's similarity to it."""
        feats, sids, assign, kinds_col = raw["feats"], raw["sids"], raw["assign"], raw["kinds"]
        emb = ctx.path("embeddings.npy")
        cluster_of = np.full(feats.num_rows, -1, np.int64)
        sim_of = assign.column("similarity").to_numpy().astype(np.float32, copy=True)
        for kind, kp in curator.kinds.items():
            rank = np.full(len(kp.parts), -1, np.int64)
            for part, i in final[kind].items():
                rank[part] = i
            raw_cent = load_matrix(ctx.path(f"kmeans_centroids_{kind}.npy"), mmap=True)
            cents = np.zeros((len(final[kind]), raw_cent.shape[1]), np.float32)
            sim_sid = np.full(len(kp.sids), np.nan, np.float32)
            for part, i in final[kind].items():
                p = kp.parts[part]
                if p.raw is not None:
                    cents[i] = raw_cent[p.raw]
                    continue
                members = np.flatnonzero(kp.part_of == part)
                x = read_rows(emb, kp.sids[members])
                mean = (x * kp.weights[members, None].astype(np.float32)).sum(axis=0)
                cents[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
                sim_sid[members] = x @ cents[i]
            save_matrix(ctx.output(f"centroids_{kind}.npy"), cents)
            mask = kinds_col == kind
            pos = np.searchsorted(kp.sids, sids[mask])
            cluster_of[mask] = offsets[kind] + rank[kp.part_of[pos]]
            new_sim = sim_sid[pos]
            sim_of[mask] = np.where(np.isnan(new_sim), sim_of[mask], new_sim)
        assignments = pa.table({"feature_id": feats.column("feature_id"), "kind": feats.column("kind"),
                                "cluster_id": pa.array(cluster_of, pa.int64()),
                                "similarity": pa.array(sim_of, pa.float32())})
        ctx.write_table("assignments.parquet", assignments)
        ctx.write_table("clusters_base.parquet", base_table(
            assignments, feats, sids, offsets, {k: len(v) for k, v in final.items()},
            int(ctx.config.min_cluster_size), pq.read_schema(ctx.path("kmeans_clusters.parquet"))))


def base_table(assignments: pa.Table, feats: pa.Table, sids: NDArray[np.int64], offsets: dict[str, int],
               sizes: dict[str, int], min_cluster_size: int, schema: pa.Schema) -> pa.Table:
    """The cluster stage's per-cluster counts for a curated partition: size, distinct
    strings, small, pieces and transcripts, with the k-means table's schema."""
    cid = assignments.column("cluster_id").to_numpy()
    n = sum(sizes.values())
    size = np.bincount(cid, minlength=n)
    pairs = np.unique(np.stack([cid, sids]), axis=1)
    distinct = np.bincount(pairs[0], minlength=n)
    spread = pa.table({"cluster_id": assignments.column("cluster_id"), "piece_id": feats.column("piece_id"),
                       "transcript_id": feats.column("transcript_id")}) \
        .group_by("cluster_id").aggregate([("piece_id", "count_distinct"), ("transcript_id", "count_distinct")]) \
        .sort_by("cluster_id")
    pieces = np.zeros(n, np.int64)
    transcripts = np.zeros(n, np.int64)
    ids = spread.column("cluster_id").to_numpy()
    pieces[ids] = spread.column("piece_id_count_distinct").to_numpy()
    transcripts[ids] = spread.column("transcript_id_count_distinct").to_numpy()
    kinds = [k for k in PIECE_KINDS if k in sizes for _ in range(sizes[k])]
    local = np.concatenate([np.arange(sizes[k]) for k in PIECE_KINDS if k in sizes])
    cols = {"cluster_id": np.arange(n), "kind": kinds, "cluster": local, "size": size, "distinct": distinct,
            "small": size < min_cluster_size, "pieces": pieces, "transcripts": transcripts}
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema}, schema=schema)
