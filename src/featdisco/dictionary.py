"""The fitted dictionary: cluster table and centroids per kind, applied to new features like
an encoder (SPEC step 8: each new feature goes to its nearest existing cluster), and what in
new data it lacks: features farther from their nearest centroid than the fit's members were,
grouped into candidate new clusters (issue 15 item 5)."""

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

FLOOR_TOLERANCE = 1e-5  # cosine: below rounding of a fitted member's similarity, far above noise


@dataclass(slots=True)
class Dictionary:
    """The fitted clusters. Cluster ids are stable (:mod:`featdisco.cluster_ids`), so they
    need not be 0..n-1: ``ids[kind][r]`` is the id of row ``r`` of ``centroids[kind]`` (the
    cluster table's ``cluster`` column)."""

    clusters: pa.Table
    centroids: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]

    @property
    def id_bound(self) -> int:
        """One more than the largest cluster id: the width of an id-indexed array."""
        return int(max(self.clusters.column("cluster_id").to_pylist(), default=-1)) + 1

    @property
    def floors(self) -> np.ndarray | None:
        """Each cluster's ``min_similarity`` (the 1st percentile of its fitted members'
        similarity to its centroid), indexed by cluster id (NaN for an id not in the table);
        None for a run fitted before it existed."""
        if "min_similarity" not in self.clusters.column_names:
            return None
        out = np.full(self.id_bound, np.nan, dtype=np.float32)
        out[np.asarray(self.clusters.column("cluster_id").to_numpy(), dtype=np.int64)] = np.asarray(
            self.clusters.column("min_similarity").to_numpy(zero_copy_only=False), dtype=np.float32)
        return out

    def unassigned(self, cluster_ids: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        """True for each feature farther from its nearest centroid than nearly all of that
        cluster's fitted members were, and for each feature of a kind the dictionary has no
        clusters for (id -1): the dictionary has no cluster for it."""
        floors = self.floors
        if floors is None:
            raise FeatdiscoError("this dictionary was fitted before per-cluster thresholds existed; "
                                 "rerun `featdisco run` on it to find what is new in new data")
        cids = np.asarray(cluster_ids, dtype=np.int64)
        out = np.ones(len(cids), dtype=bool)
        known = cids >= 0
        # a member exactly at its cluster's floor is not new: allow for float rounding, as
        # the fit and transform may sum the same dot product in another order
        out[known] = np.asarray(similarity)[known] < floors[cids[known]] - FLOOR_TOLERANCE
        return out

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
        ids: dict[str, np.ndarray] = {}
        kinds = np.asarray(clusters.column("kind").to_pylist(), dtype=object)
        cids = np.asarray(clusters.column("cluster_id").to_numpy(), dtype=np.int64)
        rows = np.asarray(clusters.column("cluster").to_numpy(), dtype=np.int64)
        for kind in PIECE_KINDS:
            file = path / f"centroids_{kind}.npy"
            mine = kinds == kind
            if mine.any():
                if not file.exists():
                    raise FeatdiscoError(f"{file} is missing from the fitted dictionary")
                centroids[kind] = np.load(file)
                of_row = np.full(len(centroids[kind]), -1, dtype=np.int64)
                if rows[mine].max() >= len(of_row):
                    raise FeatdiscoError(f"{table_path}: a {kind} cluster names centroid row {rows[mine].max()}, "
                                         f"{file.name} has {len(of_row)}")
                of_row[rows[mine]] = cids[mine]
                ids[kind] = of_row
        return cls(clusters, centroids, ids)

    def assign(self, kinds: list[str], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cluster (its id) and cosine similarity for each unit vector, by the
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
                out[rows] = self.ids[kind][best]
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


@dataclass(slots=True)
class NewClusters:
    """Candidate new clusters of one transform: ``table`` (new_cluster, kind, size, distinct,
    nearest_cluster_id, nearest_similarity; one row each) and each feature's ``new_cluster``
    (-1: none). ``members[i]`` are the distinct texts of candidate ``i``."""

    table: pa.Table
    feature_cluster: np.ndarray
    members: list[list[str]]


# A known cluster's members fall below its floor 1% of the time: a group of more than five
# times that share of the features that landed on its nearest cluster is no tail of it.
TAIL_SHARE = 0.05
MAX_LINKAGE = 4000  # distinct unassigned texts of a kind grouped exactly; more are sampled
MIN_NEW = 10  # features: fewer is too few to call a behaviour new rather than noise


def group_unassigned(kinds: list[str], texts: list[str], vectors: np.ndarray, cluster_ids: np.ndarray,
                     unassigned: np.ndarray, dictionary: Dictionary, *, min_size: int = 3) -> NewClusters:
    """Group the unassigned features of each kind into candidate new clusters.

    Distinct texts are grouped by average-linkage agglomeration, cut where a group's members
    are on average less similar to each other than half the kind's typical fitted floor (a
    fitted cluster's members sit at least that close to their centroid, so a group looser
    than that is no behaviour). A group is the tail of a known behaviour, not a new one, and
    is dropped, when its centroid is as close to its nearest cluster as that cluster's own
    members are, or when it is no bigger than a few times the 1% of that cluster's new
    features expected below its floor anyway; so is a group of fewer than ``min_size``
    (at least :data:`MIN_NEW`) features. A kind absent at fit has no cluster to be the tail
    of: its groups are all offered (``nearest_cluster_id`` -1), cut at the fit's median floor.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    floors = dictionary.floors
    min_size = max(min_size, MIN_NEW)
    landed = np.bincount(np.asarray(cluster_ids)[np.asarray(cluster_ids) >= 0], minlength=dictionary.id_bound)
    fitted_floor = float(np.nanmedian(floors)) if floors is not None and np.isfinite(floors).any() else 0.0
    feature_cluster = np.full(len(kinds), -1, dtype=np.int64)
    rows: dict[str, list] = {n: [] for n in ("kind", "size", "distinct", "nearest_cluster_id",
                                             "nearest_similarity")}
    members: list[list[str]] = []
    kinds_arr, texts_arr = np.asarray(kinds, dtype=object), np.asarray(texts, dtype=object)
    for kind in PIECE_KINDS:
        idx = np.nonzero(unassigned & (kinds_arr == kind))[0]
        if floors is None or len(idx) < min_size:
            continue
        known = kind in dictionary.centroids  # else a kind absent at fit: all of it is new
        distinct, first, inverse = np.unique(texts_arr[idx].astype(str), return_index=True, return_inverse=True)
        vecs = np.ascontiguousarray(vectors[idx[first]], dtype=np.float32)
        kind_floor = float(np.median(floors[dictionary.ids[kind]])) if known else fitted_floor
        if len(distinct) == 1:
            groups = np.zeros(1, dtype=np.int64)
        else:  # agglomeration is quadratic: on a sample, then every text to its nearest group
            fit = (np.sort(np.random.default_rng(0).choice(len(distinct), MAX_LINKAGE, replace=False))
                   if len(distinct) > MAX_LINKAGE else np.arange(len(distinct)))
            tree = linkage(vecs[fit].astype(np.float64), method="average", metric="cosine")
            fitted = fcluster(tree, t=1.0 - kind_floor / 2, criterion="distance") - 1
            centres = np.stack([vecs[fit][fitted == g].mean(axis=0) for g in range(fitted.max() + 1)])
            centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
            groups = fitted if len(fit) == len(distinct) else nearest(vecs, centres.astype(np.float32))[0]
        per_feature = groups[inverse]
        for g in np.unique(groups):
            feats = idx[per_feature == g]
            if len(feats) < min_size:
                continue
            centre = vecs[groups == g].mean(axis=0)
            centre /= max(float(np.linalg.norm(centre)), 1e-12)
            near_id, near_sim = -1, float("nan")
            if known:
                near, sim = nearest(centre[None, :], np.asarray(dictionary.centroids[kind], dtype=np.float32))
                near_id, near_sim = int(dictionary.ids[kind][near[0]]), float(sim[0])
                if near_sim >= floors[near_id] or len(feats) <= TAIL_SHARE * landed[near_id]:
                    continue
            feature_cluster[feats] = len(members)
            members.append(sorted(distinct[groups == g].tolist()))
            rows["kind"].append(kind)
            rows["size"].append(len(feats))
            rows["distinct"].append(int((groups == g).sum()))
            rows["nearest_cluster_id"].append(near_id)
            rows["nearest_similarity"].append(near_sim)
    table = pa.table({"new_cluster": pa.array(range(len(members)), pa.int64()),
                      "kind": pa.array(rows["kind"], pa.string()), "size": pa.array(rows["size"], pa.int64()),
                      "distinct": pa.array(rows["distinct"], pa.int64()),
                      "nearest_cluster_id": pa.array(rows["nearest_cluster_id"], pa.int64()),
                      "nearest_similarity": pa.array(rows["nearest_similarity"], pa.float32())})
    return NewClusters(table, feature_cluster, members)
