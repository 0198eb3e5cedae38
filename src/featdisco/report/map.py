"""The report's map: a 2-D UMAP layout of the run's features, with each cluster's label
placed where its features lie (as datamapplot draws a data map).

Features of every kind share one embedding space, so they are laid out together and the
page toggles kinds. A layout of a million points would take far longer than the rest of the
report, so at most ``max_points`` are laid out: every cluster's centroid (so every cluster
has a place even when no feature of it is drawn) and a uniform sample of feature rows (so
frequent behaviours get more ink, as in the data), one point per distinct text. Clusters
hidden by ``featdisco edit`` are left out. UMAP's cosine neighbourhoods keep near clusters near, which a linear projection of
centroids (the earlier PCA map) flattened into one blob.

UMAP (``umap-learn``, with numba and llvmlite) is the optional extra ``featdisco[map]``.
Without it the map falls back to a PCA layout of the same points, labelled the same way,
and says so on the page and in the log.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from featdisco.storage.matrix import read_rows

MAP_POINTS = 20_000  # points laid out (centroids + sampled features); see layout_seconds in the notes
GRID = 10_000  # coordinates are sent as integers 0..GRID
MIN_UMAP = 16  # fewer points than this: PCA (UMAP needs neighbours)
LABEL_MIN_POINTS = 3  # a label sits among its cluster's points when it has this many
PCA_DIMS = 50  # UMAP runs on this many principal components
NEIGHBOURS = 15  # UMAP's n_neighbors
EDGE = 0.5  # percent of points beyond each edge of the map (outliers are pinned to it)
NO_UMAP = ("umap-learn is not installed, so the map is a PCA layout (near clusters may overlap); "
           "pip install 'featdisco[map]' for the UMAP map")

log = logging.getLogger("featdisco.report")


class MapShard(TypedDict):
    """``map.js``: the layout's points on a GRID x GRID grid, centroids first."""

    method: str
    note: str | None
    grid: int
    points: int
    features_drawn: int
    sampled: int
    cap: int
    features: int | None
    x: list[int]
    y: list[int]
    c: list[int]  # each point's cluster id
    centroids: int
    seconds: float


@dataclass(slots=True)
class MapLayout:
    """Cluster id → (x, y) of its label in [0, 1]; ``shard``: the points for the page (None:
    no map)."""

    positions: dict[int, tuple[float, float]] = field(default_factory=dict)
    shard: MapShard | None = None


def _centroids(run_dir: Path, clusters: pa.Table, keep: NDArray[np.bool_]) -> tuple[list[int], NDArray[np.float32]]:
    ids: list[int] = []
    rows: list[NDArray[np.float32]] = []
    cache: dict[str, NDArray[np.float32] | None] = {}  # kind -> its centroids
    for cid, kind, local, k in zip(clusters.column("cluster_id").to_pylist(), clusters.column("kind").to_pylist(),
                                   clusters.column("cluster").to_pylist(), keep, strict=True):
        if not k:
            continue
        if kind not in cache:
            path = run_dir / f"centroids_{kind}.npy"
            cache[kind] = np.load(path, mmap_mode="r") if path.exists() else None
        cent = cache[kind]
        if cent is not None and local < len(cent):
            ids.append(cid)
            rows.append(np.asarray(cent[local], dtype=np.float32))
    dim = rows[0].shape[0] if rows else 0
    return ids, np.vstack(rows) if rows else np.zeros((0, dim), np.float32)


def _sample_features(run_dir: Path, visible: set[int], n: int, seed: int
                     ) -> tuple[NDArray[np.int64], NDArray[np.float32], int]:
    """Up to ``n`` feature rows of visible clusters, drawn uniformly (so a behaviour gets
    points in proportion to how often it occurs), one point per distinct (cluster, text):
    (cluster id, embedding) of each, and how many rows were drawn."""
    cids = pq.read_table(run_dir / "assignments.parquet", columns=["cluster_id"]).column(0).to_numpy()
    rows = np.flatnonzero(np.isin(cids, np.fromiter(visible, np.int64, len(visible))))
    if n <= 0 or not len(rows) or not (run_dir / "embeddings.npy").exists():
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), 0
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    texts = pc.take(pq.read_table(run_dir / "features.parquet", columns=["text"]).column(0), pa.array(rows))
    strings = pq.read_table(run_dir / "strings.parquet", columns=["text"]).column(0)
    sids = pc.index_in(texts, value_set=strings).to_numpy(zero_copy_only=False)
    ok = ~np.isnan(sids.astype(float))
    # one point per distinct (cluster, string): identical points only pile up in UMAP
    pairs = np.unique(np.stack([cids[rows][ok], sids[ok].astype(np.int64)]), axis=1)
    return pairs[0], read_rows(run_dir / "embeddings.npy", pairs[1]), len(rows)


def _pca_2d(x: NDArray[np.float32]) -> NDArray[np.float64]:
    """The rows of ``x`` on their first two principal components."""
    if len(x) < 3:
        return np.column_stack([np.arange(len(x), dtype=float), np.zeros(len(x))])
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return np.asarray(xc @ vt[:2].T, dtype=np.float64)


def embed_2d(x: NDArray[np.float32], seed: int = 0) -> tuple[NDArray[np.float64], str, str | None]:
    """UMAP (cosine) of the rows of ``x``, the method used, and why it is not UMAP when it is
    not: PCA when there are too few rows for neighbours, or when umap-learn (the optional
    extra ``featdisco[map]``) is not installed."""
    if len(x) < MIN_UMAP:
        return _pca_2d(x), "pca", None
    try:
        import umap  # an optional extra; numba compiles on first use: imported only when a map is drawn
    except ImportError:
        log.warning("map: %s", NO_UMAP)
        return _pca_2d(x), "pca", NO_UMAP

    # Unit vectors: Euclidean distance ranks neighbours as cosine does, and 50 principal
    # components keep their neighbourhoods while making the neighbour search several times
    # faster than at full width. PCA initialisation: the default spectral one took 45 of
    # the 54 CPU seconds of a 20k-point layout (many small components), this one 1.
    xc = x - x.mean(axis=0)
    if x.shape[1] > PCA_DIMS:
        rng = np.random.default_rng(seed)
        fit = xc[rng.choice(len(xc), min(len(xc), 10_000), replace=False)]
        _, _, vt = np.linalg.svd(fit, full_matrices=False)
        xc = xc @ vt[:PCA_DIMS].T
    xc = np.ascontiguousarray(xc, dtype=np.float32)
    k = min(NEIGHBOURS, len(x) - 1)
    # Exact neighbours from faiss (a few thousand points: a fraction of a second). UMAP's own
    # search (pynndescent) spent ~40 s compiling itself in every process.
    index = faiss.IndexFlatL2(xc.shape[1])
    index.add(xc)
    dist, nbr = index.search(xc, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state notes and numba's chatter
        model = umap.UMAP(n_neighbors=k, min_dist=0.3, n_epochs=200, random_state=seed, init="pca",
                          precomputed_knn=(nbr, np.sqrt(np.maximum(dist, 0.0)), None))
        return np.asarray(model.fit_transform(xc), dtype=np.float64), "umap", None


def _anchor(points: NDArray[np.float64], fallback: NDArray[np.float64]) -> NDArray[np.float64]:
    """Where a cluster's label goes: the member point with the smallest median distance to
    the others — inside the cluster's largest island, where a mean or median of a cluster
    drawn as two islands would fall in the empty space between them."""
    if len(points) < LABEL_MIN_POINTS:
        return fallback
    pts = points[:: max(1, len(points) // 200)]  # a medoid of 200 points is as good and stays cheap
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2))
    return pts[int(np.argmin(np.median(d, axis=1)))]


def map_layout(run_dir: Path, clusters: pa.Table, *, max_points: int = MAP_POINTS, seed: int = 0,
               centroids_dir: Path | None = None) -> MapLayout:
    """Lay out at most ``max_points`` points; see the module docstring for which.
    ``centroids_dir``: where the centroids are, when not in ``run_dir`` (a transform's
    output is mapped with the fitted run's clusters)."""
    t0 = time.perf_counter()
    keep = np.ones(clusters.num_rows, dtype=bool)
    if "hidden" in clusters.column_names:
        keep = ~np.asarray(clusters.column("hidden").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    cent_ids, cents = _centroids(centroids_dir or run_dir, clusters, keep)
    if not cent_ids:
        return MapLayout()
    if len(cent_ids) > max_points:  # more clusters than the cap: the largest ones
        size = dict(zip(clusters.column("cluster_id").to_pylist(), clusters.column("size").to_pylist(), strict=True))
        top = np.sort(np.argsort([-size[c] for c in cent_ids], kind="stable")[:max_points])
        cent_ids, cents = [cent_ids[i] for i in top], cents[top]
    point_cids, feats, sampled = _sample_features(run_dir, set(cent_ids), max_points - len(cent_ids), seed)
    x = np.vstack([cents, feats]) if len(feats) else cents
    xy, method, note = embed_2d(np.ascontiguousarray(x, dtype=np.float32), seed)
    # a few far outliers would shrink everything else into a corner
    lo, hi = np.percentile(xy, EDGE, axis=0), np.percentile(xy, 100 - EDGE, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, span = lo - 0.02 * span, span * 1.04
    xy = np.clip((xy - lo) / span, 0.0, 1.0)
    cxy, pxy = xy[:len(cent_ids)], xy[len(cent_ids):]
    positions: dict[int, tuple[float, float]] = {}
    order = np.argsort(point_cids, kind="stable")
    bounds = np.searchsorted(point_cids[order], cent_ids)
    ends = np.searchsorted(point_cids[order], cent_ids, side="right")
    for i, cid in enumerate(cent_ids):
        at = _anchor(pxy[order[bounds[i]:ends[i]]], cxy[i])
        positions[cid] = (round(float(at[0]), 4), round(float(at[1]), 4))
    q = np.rint(np.vstack([cxy, pxy]) * GRID).astype(np.int32)
    shard = MapShard(
        method=method, note=note, grid=GRID,
        points=len(x), features_drawn=len(feats), sampled=sampled, cap=max_points,
        features=int(clusters.column("size").to_numpy().sum()) if "size" in clusters.column_names else None,
        # per point: x, y, cluster id; the first len(cent_ids) are the centroids
        x=q[:, 0].tolist(), y=q[:, 1].tolist(),
        c=np.concatenate([np.asarray(cent_ids, np.int64), point_cids]).tolist(),
        centroids=len(cent_ids), seconds=round(time.perf_counter() - t0, 2),
    )
    return MapLayout(positions, shard)
