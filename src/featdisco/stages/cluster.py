"""The cluster stage: each kind's features clustered separately (method step 5).

Each distinct string is clustered once, weighted by how often it occurs, with
:class:`~featdisco.stages.kmeans.SphericalKMeans`; every feature then takes the cluster of
its string's nearest centroid — the same rule :meth:`featdisco.dictionary.Dictionary.assign`
applies to new data, so fitted and transformed activations agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from featdisco.errors import FeatdiscoError
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.kmeans import MAX_FIT_ROWS, SphericalKMeans, auto_n_clusters
from featdisco.storage.matrix import read_rows, save_matrix
from featdisco.transcripts.model import PIECE_KINDS

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 4  # 2: every string to its nearest final centroid; 3: raw_ names (merge writes the final)
# 4: leave-one-out refinement after Lloyd (a heavy string is no longer trapped)
_ASSIGN_ROWS = 262_144


# -- the stage: features of each kind → clusters ------------------------------------------


class KindCounts(TypedDict):
    """What the cluster stage counted for one piece kind."""

    features: int
    distinct: int  # distinct feature strings
    clusters: int
    small: int  # clusters under --min-cluster-size
    empty_dropped: int  # centroids no string was nearest to


@dataclass(slots=True)
class ClusteredFeatures:
    """The cluster stage's output. ``assignments``: feature_id, kind, cluster_id,
    similarity. ``clusters``: cluster_id (global over kinds), kind, cluster (within the
    kind), size, distinct, small, pieces, transcripts. ``centroids``: per kind, k × d."""

    assignments: pa.Table
    clusters: pa.Table
    centroids: dict[str, NDArray[np.float32]]
    counts: dict[str, KindCounts]  # per piece kind


def string_ids(texts: Iterable[pa.Array | pa.ChunkedArray], n: int,
               strings: Sequence[str] | pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
    """The index in ``strings`` of each of ``n`` feature texts, given in pieces (e.g. a
    Parquet column read a block at a time), so the texts need not be in memory together."""
    values = strings if isinstance(strings, pa.Array | pa.ChunkedArray) else pa.array(strings, pa.string())
    out = np.empty(n, dtype=np.int64)
    pos = 0
    for part in texts:
        found = pc.index_in(part, value_set=values)
        if found.null_count:
            raise FeatdiscoError(f"{found.null_count} feature texts have no embedding; rerun "
                                 "the embed stage")
        if pos + len(found) > n:
            raise FeatdiscoError(f"expected {n} feature texts, read more")
        out[pos:pos + len(found)] = found.to_numpy(zero_copy_only=False)
        pos += len(found)
    if pos != n:
        raise FeatdiscoError(f"expected {n} feature texts, read {pos}")
    return out


def cluster_features(features: pa.Table, strings: Sequence[str] | pa.Array | pa.ChunkedArray,
                     embeddings: NDArray[np.float32] | str | os.PathLike[str],
                     k_for: Callable[[str, int], int], *, kinds: Sequence[str],
                     seed: int = 0, min_cluster_size: int = 3,
                     max_fit_rows: int = MAX_FIT_ROWS,
                     sids: NDArray[np.int64] | None = None) -> ClusteredFeatures:
    """Cluster each kind's features separately (SPEC step 5). ``embeddings[i]`` is the
    vector of ``strings[i]``; ``k_for(kind, n_distinct)`` picks k. Each distinct string is
    clustered once, weighted by how often it occurs, and every feature takes its string's
    cluster.

    ``embeddings`` may be the path of the ``.npy`` matrix: then only one kind's rows are in
    memory at a time, read with file reads rather than a memmap (see :func:`read_rows`).
    Strings are matched in Arrow, so millions of feature texts never become Python objects.
    A kind with more than ``max_fit_rows`` distinct strings is fitted on a uniform sample of
    that many (weights kept, so the objective is unbiased) and then assigned a block at a
    time, so memory stays bounded however large the run; below it, every string is used.
    ``sids`` (from :func:`string_ids`) gives each feature's string index directly; then
    ``features`` needs no ``text`` column, which is the bulk of a big run's features table.
    """

    def rows_of(idx: NDArray[np.int64]) -> NDArray[np.float32]:
        if isinstance(embeddings, str | os.PathLike):
            return read_rows(embeddings, idx)
        return np.ascontiguousarray(embeddings[idx])

    n_strings = len(strings)
    if sids is None:
        sids = string_ids([features.column("text")], features.num_rows, strings)
    cluster_of = np.full(features.num_rows, -1, dtype=np.int64)
    sim_of = np.zeros(features.num_rows, dtype=np.float32)
    parts: list[pa.Table] = []
    centroids: dict[str, NDArray[np.float32]] = {}
    counts: dict[str, KindCounts] = {}
    offset = 0
    for kind in kinds:
        mask = pc.equal(features.column("kind"), kind).to_numpy(zero_copy_only=False)
        if not mask.any():
            continue
        kind_sids, weights = np.unique(sids[mask], return_counts=True)
        k = k_for(kind, len(kind_sids))
        model = SphericalKMeans(n_clusters=k, seed=seed, min_cluster_size=min_cluster_size, refine=True)
        sampled = len(kind_sids) > max(max_fit_rows, k)
        fit_rows = (np.sort(np.random.default_rng(seed).choice(len(kind_sids), max(max_fit_rows, k),
                                                              replace=False))
                    if sampled else slice(None))
        model.fit(rows_of(kind_sids[fit_rows]), sample_weight=weights[fit_rows].astype(np.float32))
        # Every string to its nearest final centroid, a block of rows at a time: the rule
        # new data gets in transform, so a fitted piece and the same piece transformed agree.
        parts_l, parts_s = zip(*(model.assign(rows_of(kind_sids[s:s + _ASSIGN_ROWS]))
                                 for s in range(0, len(kind_sids), _ASSIGN_ROWS)), strict=True)
        raw_labels, raw_sims = np.concatenate(parts_l), np.concatenate(parts_s)
        # A centroid that no string is nearest to (possible after two-level fitting) would
        # be named from nothing: drop it and renumber the rest.
        used = np.bincount(raw_labels, minlength=k) > 0
        renumber = np.cumsum(used) - 1
        labels = renumber[raw_labels]
        empty, k = int(k - used.sum()), int(used.sum())
        label_of_sid = np.full(n_strings, -1, dtype=np.int64)
        label_of_sid[kind_sids] = labels
        sim_of_sid = np.zeros(n_strings, dtype=np.float32)
        sim_of_sid[kind_sids] = raw_sims
        local = label_of_sid[sids[mask]]
        cluster_of[mask] = local + offset
        sim_of[mask] = sim_of_sid[sids[mask]]
        centroids[kind] = np.asarray(model.cluster_centers_, dtype=np.float32)[used]
        small = np.bincount(local, minlength=k) < min_cluster_size
        parts.append(pa.table({
            "cluster_id": pa.array(np.arange(offset, offset + k), pa.int64()),
            "kind": pa.array([kind] * k, pa.string()),
            "cluster": pa.array(np.arange(k), pa.int64()),
            "size": pa.array(np.bincount(local, minlength=k), pa.int64()),
            "distinct": pa.array(np.bincount(labels, minlength=k), pa.int64()),
            "small": pa.array(small),
        }))
        counts[kind] = {"features": int(mask.sum()), "distinct": len(kind_sids), "clusters": k,
                        "small": int(small.sum()), "empty_dropped": empty}
        offset += k
    assignments = pa.table({
        "feature_id": features.column("feature_id"),
        "kind": features.column("kind"),
        "cluster_id": pa.array(cluster_of, pa.int64()),
        "similarity": pa.array(sim_of, pa.float32()),
    })
    spread = pa.table({"cluster_id": assignments.column("cluster_id"),
                       "piece_id": features.column("piece_id"),
                       "transcript_id": features.column("transcript_id")}) \
        .group_by("cluster_id").aggregate([("piece_id", "count_distinct"),
                                           ("transcript_id", "count_distinct")])
    clusters = pa.concat_tables(parts).join(spread, "cluster_id", join_type="left outer") \
        .sort_by("cluster_id")
    clusters = clusters.rename_columns([{"piece_id_count_distinct": "pieces",
                                         "transcript_id_count_distinct": "transcripts"}.get(c, c)
                                        for c in clusters.column_names])
    return ClusteredFeatures(assignments, clusters, centroids, counts)


def k_for(n_clusters: int | dict[str, int] | None, kind: str, n_distinct: int) -> int:
    """k for one kind: ``--clusters`` as given (a number or per kind), else the automatic rule."""
    k = n_clusters.get(kind) if isinstance(n_clusters, dict) else n_clusters
    if k is None:
        return max(1, min(auto_n_clusters(n_distinct), n_distinct))
    if k > n_distinct:
        raise FeatdiscoError(f"--clusters {k} is more than the {n_distinct} distinct {kind} "
                             "features; lower it or leave it unset for the automatic rule")
    return k


class ClusterStage(Stage):
    """Features + their embeddings → assignments, per-kind centroids and cluster counts."""

    name = "cluster"
    version = STAGE_VERSION
    reads = ("features.parquet", "strings.parquet", "embeddings.npy")
    # The k-means partition; the merge stage writes the final one under the names without raw_.
    writes = ("raw_assignments.parquet", "raw_clusters.parquet",
              *(f"raw_centroids_{kind}.npy" for kind in PIECE_KINDS))
    config = ("n_clusters", "seed", "min_cluster_size")

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config
        # Feature texts are matched to their strings a block at a time and not kept: the
        # text column is the bulk of a big run's features table.
        strings = ctx.read_table("strings.parquet").column("text")
        with pq.ParquetFile(ctx.path("features.parquet")) as pf:
            sids = string_ids((b.column(0) for b in pf.iter_batches(batch_size=1 << 20, columns=["text"])),
                              pf.metadata.num_rows, strings)
        result = cluster_features(
            ctx.read_table("features.parquet", ["feature_id", "piece_id", "transcript_id", "kind"]),
            strings, ctx.path("embeddings.npy"), lambda kind, n: k_for(cfg.n_clusters, kind, n),
            kinds=PIECE_KINDS, seed=cfg.seed, min_cluster_size=cfg.min_cluster_size, sids=sids)
        for kind, centers in result.centroids.items():
            save_matrix(ctx.output(f"raw_centroids_{kind}.npy"), centers)
        ctx.write_table("raw_assignments.parquet", result.assignments)
        ctx.write_table("raw_clusters.parquet", result.clusters)
        return StageResult(result.counts)
