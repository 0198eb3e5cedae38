"""A 2-D map of clusters: PCA of the centroids of every kind together (one embedding
space), scaled to the unit square. PCA in NumPy is instant for 20k centroids and needs no
new dependency; it keeps global structure, which is what a first look at a map is for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa


def cluster_layout(run_dir: Path, clusters: pa.Table) -> dict[int, tuple[float, float]]:
    """(x, y) in [0, 1] for each cluster id whose centroid is on disk."""
    ids: list[int] = []
    rows: list[np.ndarray] = []
    kinds = clusters.column("kind").to_pylist()
    local = clusters.column("cluster").to_pylist()
    cids = clusters.column("cluster_id").to_pylist()
    cache: dict[str, np.ndarray | None] = {}
    for kind, k, cid in zip(kinds, local, cids, strict=True):
        if kind not in cache:
            path = run_dir / f"centroids_{kind}.npy"
            cache[kind] = np.load(path, mmap_mode="r") if path.exists() else None
        cent = cache[kind]
        if cent is None or k >= len(cent):
            continue
        ids.append(cid)
        rows.append(np.asarray(cent[k], dtype=np.float64))
    if not rows:
        return {}
    x = np.vstack(rows)
    x = x - x.mean(axis=0)
    if len(x) < 3:
        xy = np.zeros((len(x), 2))
        xy[:, 0] = np.arange(len(x))
    else:
        # Top two right singular vectors; on a random sample when there are very many rows.
        rng = np.random.default_rng(0)
        fit = x[rng.choice(len(x), 5000, replace=False)] if len(x) > 5000 else x
        _, _, vt = np.linalg.svd(fit, full_matrices=False)
        xy = x @ vt[:2].T
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    xy = (xy - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    return {cid: (round(float(a), 4), round(float(b), 4)) for cid, (a, b) in zip(ids, xy, strict=True)}
