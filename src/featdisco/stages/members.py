"""Each cluster's member feature texts, as naming, rating and the cluster table read them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import pyarrow as pa

from featdisco.stages.base import StageContext


class ClusterMembers(Sequence[list[str]]):
    """Each cluster's distinct member texts (sorted) and how often each occurs, held in Arrow
    and turned into Python strings one cluster at a time.

    Naming samples distinct members and the examples are the most frequent ones, so the
    (cluster, text, count) triples are all they need; at 100k transcripts that is a few
    hundred MB of Arrow instead of ~4M Python strings in per-cluster lists.
    """

    def __init__(self, texts: pa.ChunkedArray, cluster_ids: pa.ChunkedArray, ids: int | Sequence[int]) -> None:
        """``ids``: the cluster id of each row of the cluster table (stable ids need not be
        0..n-1), or the number of clusters when they are."""
        table_ids = np.arange(ids) if isinstance(ids, int) else np.asarray(ids, dtype=np.int64)
        order = np.argsort(table_ids, kind="stable")
        # each feature's cluster as its row in the cluster table, so member lists follow the table
        sorted_ids = table_ids[order]
        cids = np.asarray(cluster_ids.to_numpy(), dtype=np.int64)
        row = np.full(len(cids), -1, np.int64)  # -1: in no cluster of the table
        if len(sorted_ids):
            at = np.clip(np.searchsorted(sorted_ids, cids), 0, len(sorted_ids) - 1)
            row = np.where(sorted_ids[at] == cids, order[at], -1)
        grouped = (pa.table({"row": pa.array(row, pa.int64()), "text": texts})
                   .group_by(["row", "text"]).aggregate([([], "count_all")])
                   .sort_by([("row", "ascending"), ("text", "ascending")]))
        self._texts = grouped.column("text").combine_chunks()
        self._counts = grouped.column("count_all").to_numpy()
        rows = grouped.column("row").to_numpy()
        self._bounds = np.searchsorted(rows, np.arange(len(table_ids) + 1))

    @classmethod
    def read(cls, ctx: StageContext, artefacts: tuple[str, ...] | None = None
             ) -> tuple[pa.Table, ClusterMembers]:
        """The cluster table and members of a stage that declares the three ``artefacts``
        (the final partition's by default; :data:`RAW_MEMBER_ARTEFACTS` the k-means one)."""
        clusters, features, assignments = artefacts or MEMBER_ARTEFACTS
        base = ctx.read_table(clusters)
        return base, cls(ctx.read_table(features, ["text"]).column("text"),
                         ctx.read_table(assignments, ["cluster_id"]).column("cluster_id"),
                         base.column("cluster_id").to_pylist())

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, i: int) -> list[str]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[str]]: ...

    def __getitem__(self, i: int | slice) -> list[str] | list[list[str]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a, b = int(self._bounds[i]), int(self._bounds[i + 1])
        return self._texts.slice(a, b - a).to_pylist()

    def most_common(self, i: int, n: int) -> list[str]:
        """The ``n`` most frequent members of cluster ``i``, ties broken alphabetically."""
        a, b = int(self._bounds[i]), int(self._bounds[i + 1])
        top = np.argsort(-self._counts[a:b], kind="stable")[:n]  # texts are sorted: stable keeps ties in order
        texts = self._texts.slice(a, b - a)
        return [texts[int(j)].as_py() for j in top]


MEMBER_ARTEFACTS = ("clusters_base.parquet", "features.parquet", "assignments.parquet")  # after merge
RAW_MEMBER_ARTEFACTS = ("raw_clusters.parquet", "features.parquet", "raw_assignments.parquet")  # k-means
