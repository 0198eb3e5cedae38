"""The fitted dictionary: cluster table and centroids per kind, applied to new features like
an encoder (SPEC step 8: each new feature goes to its nearest existing cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

from featdisco.errors import FeatdiscoError
from featdisco.stages.kmeans import nearest
from featdisco.transcripts.model import PIECE_KINDS


@dataclass(slots=True)
class Dictionary:
    clusters: pa.Table
    centroids: dict[str, np.ndarray]
    offsets: dict[str, int]

    @property
    def n_clusters(self) -> int:
        return self.clusters.num_rows

    @classmethod
    def load(cls, path: str | Path) -> Dictionary:
        path = Path(path)
        table_path = path / "clusters.parquet"
        if not table_path.exists():
            raise FeatdiscoError(f"{path} holds no fitted dictionary (clusters.parquet is missing); "
                                 "run `featdisco run` into it first")
        clusters = pq.read_table(table_path)
        centroids: dict[str, np.ndarray] = {}
        offsets: dict[str, int] = {}
        kinds = clusters.column("kind").to_pylist()
        ids = clusters.column("cluster_id").to_pylist()
        for kind in PIECE_KINDS:
            file = path / f"centroids_{kind}.npy"
            if kind in kinds:
                if not file.exists():
                    raise FeatdiscoError(f"{file} is missing from the fitted dictionary")
                centroids[kind] = np.load(file)
                offsets[kind] = min(i for i, k in zip(ids, kinds, strict=True) if k == kind)
        return cls(clusters, centroids, offsets)

    def assign(self, kinds: list[str], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cluster (global id) and cosine similarity for each unit vector, by the
        rule the cluster stage assigns with (:func:`~featdisco.stages.kmeans.nearest`); -1
        for a kind the dictionary has no clusters for."""
        out = np.full(len(kinds), -1, dtype=np.int64)
        sim = np.zeros(len(kinds), dtype=np.float32)
        kinds_arr = np.asarray(kinds, dtype=object)
        for kind, cents in self.centroids.items():
            rows = np.nonzero(kinds_arr == kind)[0]
            if len(rows):
                best, score = nearest(np.ascontiguousarray(vectors[rows], dtype=np.float32),
                                      np.asarray(cents, dtype=np.float32))
                out[rows] = best + self.offsets[kind]
                sim[rows] = score
        return out, sim


def activation_matrix(piece_ids: list[str], feature_piece_ids: list[str], cluster_ids: np.ndarray,
                      n_clusters: int) -> sparse.csr_matrix:
    """Pieces × clusters, 1 where any feature of the piece falls in the cluster."""
    row_of = {p: i for i, p in enumerate(piece_ids)}
    keep = cluster_ids >= 0
    rows = np.fromiter((row_of[p] for p in feature_piece_ids), dtype=np.int64,
                       count=len(feature_piece_ids))[keep]
    cols = cluster_ids[keep]
    m = sparse.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)),
                          shape=(len(piece_ids), n_clusters))
    m.sum_duplicates()
    m.data[:] = 1
    return m
