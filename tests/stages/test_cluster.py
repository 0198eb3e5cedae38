"""Spherical k-means: planted clusters are recovered (one- and two-level), fits are
deterministic, new points go to their nearest centroid, and bad input fails clearly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from featdisco.errors import FeatdiscoError
from featdisco.stages.kmeans import SphericalKMeans, allocate, auto_n_clusters, check_vectors


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def planted(
    n_clusters: int, n: int, d: int = 48, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors around ``n_clusters`` random centres, sizes varying about 4×."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_clusters, d)))
    p = rng.uniform(1, 4, n_clusters)
    y = rng.choice(n_clusters, n, p=p / p.sum())
    X = unit(centres[y] + noise * rng.standard_normal((n, d)) / np.sqrt(d))
    return X, y, centres


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return planted(30, 6000)


def test_one_level_recovers_planted_clusters(data: tuple) -> None:
    X, y, _ = data
    km = SphericalKMeans(30, seed=0, two_level=False).fit(X)
    assert not km.two_level_
    assert normalized_mutual_info_score(y, km.labels_) >= 0.9
    assert km.cluster_centers_.shape == (30, X.shape[1])
    assert km.cluster_centers_.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, atol=1e-5)
    own = np.einsum("ij,ij->i", X, km.cluster_centers_[km.labels_])
    np.testing.assert_allclose(km.similarity_, own, atol=1e-5)
    assert km.inertia_ == pytest.approx(float(np.sum(1 - own)), rel=1e-4)
    assert km.sizes_.sum() == len(X)
    np.testing.assert_array_equal(km.sizes_, np.bincount(km.labels_, minlength=30))


def test_two_level_recovers_planted_clusters_with_exactly_k(data: tuple) -> None:
    X, y, _ = data
    km = SphericalKMeans(30, seed=0, two_level=True).fit(X)
    assert km.two_level_
    assert km.cluster_centers_.shape == (30, X.shape[1])
    assert km.coarse_centers_ is not None and km.coarse_centers_.shape == (5, X.shape[1])
    assert km.center_parent_ is not None and len(km.center_parent_) == 30
    assert normalized_mutual_info_score(y, km.labels_) >= 0.9
    # final labels are the nearest of all k centroids, not just the coarse cell's
    best = np.argmax(X @ km.cluster_centers_.T, axis=1)
    assert np.mean(best == km.labels_) > 0.999


def test_two_level_is_chosen_automatically_only_for_large_work() -> None:
    X, _, _ = planted(8, 800, d=16)
    assert not SphericalKMeans(8).fit(X).two_level_


def test_same_seed_same_result(data: tuple) -> None:
    X, _, _ = data
    for two in (False, True):
        a = SphericalKMeans(30, seed=5, two_level=two).fit(X)
        b = SphericalKMeans(30, seed=5, two_level=two).fit(X)
        np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
        np.testing.assert_array_equal(a.labels_, b.labels_)


def test_new_points_go_to_nearest_centroid(data: tuple) -> None:
    X, y, centres = data
    km = SphericalKMeans(30, seed=0).fit(X)
    rng = np.random.default_rng(1)
    y_new = rng.integers(0, 30, 500)
    X_new = unit(centres[y_new] + 0.5 * rng.standard_normal((500, X.shape[1])) / np.sqrt(48))
    labels, sims = km.assign(X_new)
    sim_all = X_new @ km.cluster_centers_.T
    np.testing.assert_allclose(sims, sim_all.max(axis=1), atol=1e-5)
    assert np.mean(labels == sim_all.argmax(axis=1)) > 0.999
    np.testing.assert_array_equal(km.predict(X_new), labels)
    # a new point lands in the cluster that holds most training points of its planted group
    majority = np.array([np.bincount(km.labels_[y == g]).argmax() for g in range(30)])
    assert np.mean(labels == majority[y_new]) >= 0.95
    # memmaps are accepted as they are
    mm = np.lib.format.open_memmap(
        str(__import__("tempfile").mkdtemp()) + "/x.npy", "w+", np.float32, X_new.shape
    )
    mm[:] = X_new
    np.testing.assert_array_equal(km.predict(mm), labels)


def test_small_clusters_are_flagged() -> None:
    # as many distinct points as clusters: every point is its own cluster, weighted sizes
    rng = np.random.default_rng(0)
    X = unit(rng.standard_normal((6, 8)))
    w = np.array([1, 2, 3, 4, 1, 10], dtype=np.float32)
    km = SphericalKMeans(6, seed=0, min_cluster_size=3).fit(X, sample_weight=w)
    np.testing.assert_allclose(km.sizes_[km.labels_], w)
    np.testing.assert_array_equal(km.small_clusters_[km.labels_], w < 3)


def test_small_cluster_flags_follow_sizes(data: tuple) -> None:
    X, _, _ = data
    km = SphericalKMeans(60, seed=0, min_cluster_size=100).fit(X)
    np.testing.assert_array_equal(km.small_clusters_, km.sizes_ < 100)
    assert km.small_clusters_.any() and not km.small_clusters_.all()


def test_k_larger_than_distinct_vectors_is_an_error() -> None:
    rng = np.random.default_rng(0)
    X = np.repeat(unit(rng.standard_normal((4, 8))), 5, axis=0)  # 20 rows, 4 distinct
    with pytest.raises(FeatdiscoError, match=r"n_clusters=5 .* distinct vectors \(4 of 20\)"):
        SphericalKMeans(5).fit(X)
    assert len(np.unique(SphericalKMeans(4).fit(X).labels_)) == 4
    with pytest.raises(FeatdiscoError, match="positive integer"):
        SphericalKMeans(0).fit(X)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((0, 8), dtype=np.float32), "empty"),
        (np.ones(8, dtype=np.float32), "2-D"),
        (unit(np.ones((3, 8))).astype(np.float64), "float32"),
        (np.ones((3, 8), dtype=np.float32), "norm"),
        ([[1.0, 0.0]], "numpy array"),
    ],
)
def test_bad_input_is_a_clear_error(X: object, message: str) -> None:
    with pytest.raises(FeatdiscoError, match=message):
        SphericalKMeans(1).fit(X)  # type: ignore[arg-type]


def test_nan_row_is_named() -> None:
    X = unit(np.ones((5, 4)))
    X[3, 1] = np.nan
    with pytest.raises(FeatdiscoError, match="row 3 contains NaN"):
        check_vectors(X)


def test_assign_checks_fit_and_dimension(data: tuple) -> None:
    X, _, _ = data
    with pytest.raises(FeatdiscoError, match="not fitted"):
        SphericalKMeans(3).predict(X)
    km = SphericalKMeans(3).fit(X[:100])
    with pytest.raises(FeatdiscoError, match="dimension 8"):
        km.predict(unit(np.ones((2, 8))))


def test_allocation_is_proportional_capped_and_exact() -> None:
    alloc = allocate(np.array([100.0, 10.0, 1.0, 50.0]), np.array([1000, 1000, 1000, 3]), 20)
    assert alloc.sum() == 20
    assert alloc.min() >= 1 and alloc[3] == 3
    assert alloc[0] > alloc[1] >= alloc[2]


def test_auto_n_clusters() -> None:
    assert [auto_n_clusters(n) for n in (1, 300, 42_500, 62_500, 1_000_000)] == [
        1, 17, 206, 250, 4000,
    ]
    with pytest.raises(FeatdiscoError):
        auto_n_clusters(0)


def test_cluster_features_drops_a_centroid_no_string_is_nearest_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """After two-level fitting a centroid can end up with no members; it must not become a
    cluster (it would be named from nothing) and the others are renumbered densely."""
    import pyarrow as pa

    from featdisco.stages import cluster as stage

    class WithAnEmptyCentroid(stage.SphericalKMeans):
        def fit(self, X: Any, sample_weight: Any = None) -> Any:
            self.n_clusters -= 1
            super().fit(X, sample_weight)
            far = -np.asarray(X, dtype=np.float32).mean(axis=0)
            far /= np.linalg.norm(far)
            self.cluster_centers_ = np.vstack([far[None, :], self.cluster_centers_])  # index 0: empty
            self.labels_ = self.labels_ + 1
            self.small_clusters_ = np.concatenate([[True], self.small_clusters_])
            return self

    monkeypatch.setattr(stage, "SphericalKMeans", WithAnEmptyCentroid)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2, 16)).astype(np.float32)
    emb = np.vstack([c + 0.05 * rng.normal(size=(5, 16)) for c in centers]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    strings = [f"s{i}" for i in range(10)]
    features = pa.table({"feature_id": [f"f{i}" for i in range(10)], "piece_id": [f"p{i}" for i in range(10)],
                         "transcript_id": ["t"] * 10, "kind": ["user"] * 10, "text": strings})
    out = stage.cluster_features(features, strings, emb, lambda kind, n: 3, kinds=["user"])
    assert out.clusters.num_rows == 2
    assert out.centroids["user"].shape == (2, 16)
    assert sorted(set(out.assignments.column("cluster_id").to_pylist())) == [0, 1]
    assert out.counts["user"]["empty_dropped"] == 1
    assert out.clusters.column("pieces").null_count == 0


def test_cluster_features_reads_the_matrix_file_like_the_array(tmp_path: Any) -> None:
    """The pipeline passes the path of embeddings.npy so only one kind's rows are in memory;
    the result must be the one the in-memory matrix gives."""
    import pyarrow as pa

    from featdisco.stages.cluster import cluster_features, string_ids
    from featdisco.storage.matrix import save_matrix

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 16)).astype(np.float32)
    emb = np.vstack([c + 0.05 * rng.normal(size=(20, 16)) for c in centers]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    strings = [f"s{i:02d}" for i in range(60)]
    texts = [strings[i % 60] for i in range(150)]
    kinds = ["user" if i % 2 else "response" for i in range(150)]
    features = pa.table({"feature_id": [f"f{i}" for i in range(150)],
                         "piece_id": [f"p{i // 5}" for i in range(150)],
                         "transcript_id": [f"t{i // 10}" for i in range(150)],
                         "kind": kinds, "text": texts})
    k_for = lambda kind, n: 3  # noqa: E731
    in_memory = cluster_features(features, strings, emb, k_for, kinds=["user", "response"])
    on_disk = cluster_features(features, pa.array(strings), save_matrix(tmp_path / "e.npy", emb),
                               k_for, kinds=["user", "response"])
    assert in_memory.assignments.equals(on_disk.assignments)
    assert in_memory.clusters.equals(on_disk.clusters)
    assert in_memory.clusters.num_rows == 6
    # as the pipeline calls it: texts matched a block at a time, the table without them
    blocks = (pa.array(texts[i:i + 40]) for i in range(0, 150, 40))
    sids = string_ids(blocks, 150, pa.array(strings))
    assert sids.tolist() == [i % 60 for i in range(150)]
    streamed = cluster_features(features.drop_columns(["text"]), pa.array(strings),
                                save_matrix(tmp_path / "e2.npy", emb), k_for,
                                kinds=["user", "response"], sids=sids)
    assert streamed.assignments.equals(in_memory.assignments)
    assert streamed.clusters.equals(in_memory.clusters)
    with pytest.raises(FeatdiscoError, match="1 feature texts have no embedding"):
        string_ids([pa.array(["s01", "never embedded"])], 2, strings)
    with pytest.raises(FeatdiscoError, match="expected 3 feature texts, read 2"):
        string_ids([pa.array(["s01", "s02"])], 3, strings)


def test_gpu_request_without_a_gpu_is_a_clear_error(data: tuple) -> None:
    """faiss-cpu sees no GPU: the default quietly fits on the CPU, asking for one fails."""
    from featdisco.stages.kmeans import gpu_count

    X = data[0]
    assert gpu_count() == 0
    model = SphericalKMeans(n_clusters=3, seed=0).fit(X)
    assert model.gpus_ == 0
    with pytest.raises(FeatdiscoError, match="faiss sees no GPU"):
        SphericalKMeans(n_clusters=3, gpu=True).fit(X)


def test_cluster_features_fits_a_sample_of_a_big_kind_and_assigns_every_string(tmp_path: Any) -> None:
    """Past max_fit_rows distinct strings a kind is fitted on a sample, then every string is
    assigned in blocks: the planted groups must still come out whole, sizes must count all
    features, and the small-cluster flags must follow those sizes."""
    import pyarrow as pa

    from featdisco.stages.cluster import cluster_features
    from featdisco.storage.matrix import save_matrix

    X, y, _ = planted(4, 400, d=32, noise=0.3, seed=5)
    strings = [f"s{i:03d}" for i in range(400)]
    texts = strings + strings[:100]  # the first 100 strings occur twice
    features = pa.table({"feature_id": [f"f{i}" for i in range(500)],
                         "piece_id": [f"p{i}" for i in range(500)],
                         "transcript_id": [f"t{i}" for i in range(500)],
                         "kind": ["user"] * 500, "text": texts})
    out = cluster_features(features, strings, save_matrix(tmp_path / "e.npy", X),
                           lambda kind, n: 4, kinds=["user"], max_fit_rows=50, min_cluster_size=3)
    got = np.asarray(out.assignments.column("cluster_id").to_pylist()[:400])
    assert normalized_mutual_info_score(y, got) > 0.99
    clusters = out.clusters.to_pydict()
    assert sum(clusters["size"]) == 500 and sum(clusters["distinct"]) == 400
    assert clusters["small"] == [s < 3 for s in clusters["size"]]
