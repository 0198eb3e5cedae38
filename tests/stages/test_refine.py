"""Issue 23 item 4: a heavy duplicated string that nearest-centroid k-means traps in the
wrong cluster (its own weight holds that centroid near it) is freed by the leave-one-out
refinement, and the cluster stage uses it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from featdisco.stages.cluster import cluster_features
from featdisco.stages.kmeans import SphericalKMeans, nearest, refine_leave_one_out


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _trap(seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """10 apology strings around e0, 4 Spanish sign-offs around e1, and one string seen 35
    times at 40° from e0 (cos 0.77 to the apologies, 0.64 to the sign-offs). Returns the
    vectors, their counts and the heavy row."""
    rng = np.random.default_rng(seed)
    d = 8
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    apologies = _unit(e0 + 0.1 * rng.standard_normal((10, d)))
    spanish = _unit(e1 + 0.1 * rng.standard_normal((4, d)))
    heavy = _unit(np.cos(np.radians(40)) * e0 + np.sin(np.radians(40)) * e1)[None, :]
    X = np.ascontiguousarray(np.vstack([apologies, spanish, heavy]))
    w = np.r_[np.ones(14), 35.0].astype(np.float32)
    return X, w, 14


def _centroid(X: np.ndarray, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return _unit((w[rows, None] * X[rows]).sum(axis=0))


def test_the_heavy_string_is_trapped_by_nearest_centroid_and_freed_by_leave_one_out() -> None:
    X, w, heavy = _trap()
    apology, spanish = np.arange(10), np.r_[10:15]  # the heavy string starts with the sign-offs
    centers = np.vstack([_centroid(X, w, apology), _centroid(X, w, spanish)])
    # the trap: a Lloyd fixed point (every row nearest its own centroid), heavy row in cluster 1
    labels, _ = nearest(X, centers)
    assert labels[heavy] == 1 and (labels[:10] == 0).all() and (labels[10:] == 1).all()
    # ... although the string is nearer the apologies than the sign-offs without itself
    assert X[heavy] @ _centroid(X, w, apology) > X[heavy] @ _centroid(X, w, np.r_[10:14])

    refined, new_centers, moved = refine_leave_one_out(X, centers, w)
    assert refined[heavy] == 0, "the heavy string should join the apologies"
    assert (refined[:10] == 0).all() and (refined[10:14] == 1).all()
    assert moved[0] == 1 and moved[-1] == 0  # converged
    # at the fixed point nearest-centroid agrees, so predict() on the same strings agrees
    assert (nearest(X, new_centers)[0] == refined).all()


def test_a_lone_row_stays() -> None:
    X, w, heavy = _trap()
    X, w = X[np.r_[0:10, heavy]], w[np.r_[0:10, heavy]]
    # cluster 1 is the heavy string alone: it has no leave-one-out centroid, so it stays
    # (moving it would empty its cluster)
    centers = np.vstack([_centroid(X, w, np.arange(10)), X[10]])
    labels, _, moved = refine_leave_one_out(X, centers, w)
    assert labels[10] == 1 and (labels[:10] == 0).all() and moved == [0]


def test_no_cluster_is_emptied_when_all_its_members_would_leave() -> None:
    """Two rows at 25° and 65° share the middle cluster; each is nearer an outer cluster than
    to the other, so both would leave: the one that gains least stays."""
    d = 4
    e0, e1 = np.eye(d)[0], np.eye(d)[1]

    def at(deg: float) -> np.ndarray:
        return _unit(np.cos(np.radians(deg)) * e0 + np.sin(np.radians(deg)) * e1)

    rng = np.random.default_rng(0)
    outer_a = _unit(e0 + 0.05 * rng.standard_normal((5, d)))
    outer_b = _unit(e1 + 0.05 * rng.standard_normal((5, d)))
    X = np.ascontiguousarray(np.vstack([outer_a, outer_b, at(25)[None], at(66)[None]]))
    centers = np.vstack([_unit(e0), _unit(e1), at(45)]).astype(np.float32)
    start, _ = nearest(X, centers)
    assert (start[10:] == 2).all()
    labels, _, _ = refine_leave_one_out(X, centers)
    assert np.bincount(labels, minlength=3).min() == 1
    # the 66° row is 24° from the outer cluster, the 25° row 25°: the latter gains less, stays
    assert labels[11] == 1 and labels[10] == 2


def _leave_one_out_violations(X: np.ndarray, w: np.ndarray, labels: np.ndarray,
                              centers: np.ndarray) -> int:
    """Rows of 5%+ of their cluster's weight with another centroid nearer than their own
    cluster's centroid without them, and rows not nearest their own centroid."""
    bad = int((nearest(X, np.ascontiguousarray(centers, dtype=np.float32))[0] != labels).sum())
    for i in range(len(X)):
        rest = (labels == labels[i]) & (np.arange(len(X)) != i)
        if not rest.any() or w[i] <= 0.05 * w[labels == labels[i]].sum():
            continue
        loo = X[i] @ _centroid(X, w, np.nonzero(rest)[0])
        others = np.delete(centers, labels[i], axis=0)
        bad += int((others @ X[i]).max() > loo + 1e-6)
    return bad


def _heavy_data(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Six themes of 30 strings each, one string per theme seen 40-80 times, plus 30 loose
    strings between themes: heavy strings and loose ones are where Lloyd traps rows."""
    rng = np.random.default_rng(seed)
    d = 16
    themes = _unit(rng.standard_normal((6, d)))
    X = [_unit(themes[t] + 0.6 * rng.standard_normal((30, d)) / np.sqrt(d) * 4) for t in range(6)]
    loose = _unit(themes[rng.integers(0, 6, 30)] + themes[rng.integers(0, 6, 30)]
                  + 0.3 * rng.standard_normal((30, d)))
    Xa = np.ascontiguousarray(np.vstack([*X, loose]))
    w = np.ones(len(Xa), dtype=np.float32)
    w[np.arange(6) * 30] = rng.integers(40, 80, 6)
    return Xa, w


def test_fit_with_refine_leaves_no_row_trapped() -> None:
    X, w = _heavy_data()
    plain = SphericalKMeans(8, seed=1, n_init=1).fit(X, sample_weight=w)
    refined = SphericalKMeans(8, seed=1, n_init=1, refine=True).fit(X, sample_weight=w)
    assert _leave_one_out_violations(X, w, plain.labels_, plain.cluster_centers_) > 0
    assert sum(refined.refine_moves_) > 0
    assert _leave_one_out_violations(X, w, refined.labels_, refined.cluster_centers_) == 0
    assert (refined.predict(X) == refined.labels_).all()


def test_the_cluster_stage_refines() -> None:
    """The stage clusters distinct strings weighted by count: repeated feature texts are the
    heavy rows, and no string ends trapped."""
    X, w = _heavy_data()
    strings = [f"s{i}" for i in range(len(X))]
    texts = [s for s, c in zip(strings, w.astype(int), strict=True) for _ in range(c)]
    n = len(texts)
    features = pa.table({"feature_id": [f"f{i}" for i in range(n)], "piece_id": [f"p{i}" for i in range(n)],
                         "transcript_id": [f"t{i}" for i in range(n)], "kind": ["response"] * n, "text": texts})
    out = cluster_features(features, strings, X, lambda kind, m: 8, kinds=["response"], seed=1)
    fid_cluster = dict(zip(out.assignments.column("feature_id").to_pylist(),
                           out.assignments.column("cluster_id").to_pylist(), strict=True))
    first = np.cumsum(np.r_[0, w.astype(int)[:-1]])
    labels = np.array([fid_cluster[f"f{i}"] for i in first])
    assert _leave_one_out_violations(X, w, labels, out.centroids["response"]) == 0



def test_a_kind_past_the_refinement_limit_keeps_lloyds_centroids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past REFINE_MAX_ROWS distinct strings the refinement (a search of every row against all
    k centroids per pass: 16 minutes unfinished on a 100k-transcript kind) is skipped and the
    fit is Lloyd's, as it was before the refinement existed; at or under it, it runs."""
    from featdisco.stages import kmeans

    X, w = _heavy_data()
    plain = SphericalKMeans(8, seed=1, n_init=1).fit(X, sample_weight=w)
    monkeypatch.setattr(kmeans, "REFINE_MAX_ROWS", len(X) - 1)
    past = SphericalKMeans(8, seed=1, n_init=1, refine=True).fit(X, sample_weight=w)
    assert past.refine_rows_ == 0 and past.refine_moves_ == []
    assert (past.labels_ == plain.labels_).all()
    monkeypatch.setattr(kmeans, "REFINE_MAX_ROWS", len(X))
    at = SphericalKMeans(8, seed=1, n_init=1, refine=True).fit(X, sample_weight=w)
    assert at.refine_rows_ == len(X) and sum(at.refine_moves_) > 0
