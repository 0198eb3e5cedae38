"""Spherical k-means over unit-norm feature embeddings (method step 5), on faiss.

One-level k-means costs ``n_train · k · d`` multiply-adds per iteration; faiss subsamples to
``n_train = min(n, k · max_points_per_centroid)``. When that work is too large for a CPU, the
fit is two-level: a coarse k-means into ``k1 ≈ √k`` cells, then a fine k-means inside each
cell with its share of ``k`` proportional to the cell's size, so each point is compared with
about ``k / k1`` centroids instead of ``k``. Every point is finally assigned to its nearest of
all ``k`` centroids (exact inner-product search), so a point near a cell border is not stuck
with its cell's centroids, and ``predict`` on new data uses the same rule.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from featdisco.errors import FeatdiscoError

# Two-level is chosen automatically when n_train · k exceeds this. Measured with faiss-cpu
# 1.15 on 2 cores at d = 384: flat spherical Lloyd runs at ≈ 64 GFLOP/s, so 2.5e8 · 384 · 2
# flops is ≈ 3 s per iteration, ≈ 1 minute for 20 iterations. With the default 256 points
# per centroid, n_train · k ≤ 256 · k², so this only triggers from k ≈ 1,000 upwards;
# bench/cluster.py (1M × 384, k = 2,000) measures the gap it closes.
TWO_LEVEL_MIN_WORK = 2.5e8
# Distinct strings of one kind that a fit holds in memory (1.5 kB each at 384-d: 3 GB);
# beyond it the fit uses a sample and assignment runs in blocks. A 100k-transcript run has
# about 1M per kind, so this applies from a few hundred thousand transcripts up.
MAX_FIT_ROWS = 2_000_000
# Distinct strings of one kind up to which the leave-one-out refinement runs. Each of its
# passes searches its rows against the k centroids: over all 1.1M strings of a kind at
# k = 4,400 (a 100k-transcript run) it ran 16 minutes without finishing, and over a 100k-row
# weighted sample (tried and dropped) still several minutes a kind, with centroids from
# ~23 sampled rows per cluster. Beyond this a kind keeps Lloyd's centroids, as before the
# refinement existed; a heavy string there may stay trapped (README, "Clustering").
REFINE_MAX_ROWS = 100_000
# ``transform`` calls a new feature unassigned when it is farther from its nearest centroid
# than this percentile of the cluster's fitted members were (each cluster's ``min_similarity``).
THRESHOLD_PERCENTILE = 1.0
_CHUNK = 65_536  # rows per block when scanning or searching, to bound memory on memmaps
_NORM_TOL = 1e-3


def auto_n_clusters(n_features: int) -> int:
    """Pick k from the number of feature vectors: ``√n`` up to 62,500, then ``n / 250``.

    Why: the reference study ended with ~20k clusters for ~5M feature instances over three
    kinds (≈ 250 features per cluster), and the public replication used 150 clusters for
    42.5k features (≈ 280 per cluster); a cluster is named from 100 sampled members, so at
    scale each cluster should hold a few hundred. Small runs cannot afford that: a demo with
    300 features would get one cluster, so below 62,500 features (where the two rules meet
    at k = 250) k grows as √n, giving 17 clusters for 300 features, 32 for 1,000, 206 for
    42.5k, 4,000 for 1M. k is a resolution knob, not a truth: higher k splits themes into
    near-duplicate clusters, lower k lets rare themes be absorbed into generic ones; set
    ``n_clusters`` yourself when you know the resolution you want. The caller should clamp
    to the number of distinct vectors.
    """
    if n_features < 1:
        raise FeatdiscoError("cannot choose a number of clusters for zero features")
    per_cluster = min(250.0, math.sqrt(n_features))
    return max(1, round(n_features / per_cluster))


def member_floors(cluster: NDArray[np.int64], similarity: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Each of ``k`` clusters' ``min_similarity``: the :data:`THRESHOLD_PERCENTILE` of its
    members' similarity to its centroid (0 for a cluster without members), from each
    member's cluster (0..k-1) and similarity."""
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(k + 1))
    return np.array([np.percentile(similarity[order[a:b]], THRESHOLD_PERCENTILE) if b > a else 0.0
                     for a, b in itertools.pairwise(bounds)], dtype=np.float32)


def check_vectors(X: ArrayLike, name: str = "X") -> NDArray[np.float32]:
    """Validate a 2-D float32 matrix of finite unit-norm rows; memmaps stay memory-mapped."""
    if not isinstance(X, np.ndarray):
        raise FeatdiscoError(f"{name} must be a numpy array (or memmap), got {type(X).__name__}")
    if X.ndim != 2:
        raise FeatdiscoError(f"{name} must be 2-D (n_vectors, dim), got shape {X.shape}")
    if X.dtype != np.float32:
        raise FeatdiscoError(f"{name} must be float32 unit vectors, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise FeatdiscoError(f"{name} is empty (shape {X.shape}): nothing to cluster")
    X = np.ascontiguousarray(X)  # no copy for a C-ordered memmap
    for start in range(0, X.shape[0], _CHUNK):
        block = np.asarray(X[start : start + _CHUNK])
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise FeatdiscoError(f"{name} row {row} contains NaN or infinity")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        bad = np.abs(norms - 1.0) > _NORM_TOL
        if bad.any():
            row = start + int(np.argmax(bad))
            raise FeatdiscoError(
                f"{name} row {row} has norm {norms[row - start]:.4g}; spherical k-means needs "
                "unit-normalised vectors"
            )
    return X


def distinct_rows(X: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """First row of each distinct vector and every row's group, or None when all differ.

    Features repeat a lot; k-means on repeated rows can seed two centroids on one vector
    and leave a cluster empty, so duplicates are clustered once, weighted by their count.
    Rows are grouped by a fixed random projection (equal rows project equally), then the
    grouping is verified row by row; an exact sort is the fallback on a collision.
    """
    r = np.random.default_rng(12345).standard_normal(X.shape[1])
    proj = np.concatenate(
        [np.asarray(X[s : s + _CHUNK], dtype=np.float64) @ r for s in range(0, len(X), _CHUNK)]
    )
    _, first, inverse = np.unique(proj, return_index=True, return_inverse=True)
    if len(first) == len(X):
        return None
    for s in range(0, len(X), _CHUNK):
        if not np.array_equal(X[s : s + _CHUNK], X[first[inverse[s : s + _CHUNK]]]):
            rows = np.ascontiguousarray(X).view(np.dtype((np.void, X.shape[1] * 4))).ravel()
            _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
            break
    return first.astype(np.int64), inverse.astype(np.int64)


def allocate(sizes: NDArray[np.float64], caps: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    """Split ``k`` over cells proportionally to ``sizes`` (D'Hondt), each in ``[1, cap]``."""
    if k < len(sizes) or k > int(caps.sum()):
        raise FeatdiscoError(f"cannot split {k} clusters over {len(sizes)} cells")
    alloc = np.ones(len(sizes), dtype=np.int64)
    heap = [(-float(s) / 2.0, i) for i, s in enumerate(sizes) if caps[i] > 1]
    heapq.heapify(heap)
    for _ in range(k - len(sizes)):
        _, i = heapq.heappop(heap)
        alloc[i] += 1
        if alloc[i] < caps[i]:
            heapq.heappush(heap, (-float(sizes[i]) / (alloc[i] + 1), i))
    return alloc


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu, the visible devices with faiss-gpu."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None else 0
    except Exception:  # a GPU build without a usable driver
        return 0


def nearest(
    X: NDArray[np.float32], centers: NDArray[np.float32], gpus: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact nearest centroid by inner product (faiss ``IndexFlatIP``, on ``gpus`` GPUs
    when > 0), in blocks."""
    index: Any = faiss.IndexFlatIP(centers.shape[1])
    if gpus > 0:
        index = faiss.index_cpu_to_all_gpus(index, ngpu=gpus)
    index.add(np.ascontiguousarray(centers, dtype=np.float32))
    labels = np.empty(len(X), dtype=np.int64)
    sims = np.empty(len(X), dtype=np.float32)
    for s in range(0, len(X), _CHUNK):
        D, Id = index.search(np.ascontiguousarray(X[s : s + _CHUNK]), 1)
        labels[s : s + len(Id)] = Id[:, 0]
        sims[s : s + len(D)] = D[:, 0]
    return labels, sims


def _top2(X: NDArray[np.float32], centers: NDArray[np.float32],
          gpus: int = 0) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The two nearest centroids of every row by inner product (n × 2 ids and cosines)."""
    index: Any = faiss.IndexFlatIP(centers.shape[1])
    if gpus > 0:
        index = faiss.index_cpu_to_all_gpus(index, ngpu=gpus)
    index.add(np.ascontiguousarray(centers, dtype=np.float32))
    m = min(2, len(centers))
    ids = np.empty((len(X), m), dtype=np.int64)
    sims = np.empty((len(X), m), dtype=np.float32)
    for s in range(0, len(X), _CHUNK):
        D, Id = index.search(np.ascontiguousarray(X[s : s + _CHUNK]), m)
        ids[s : s + len(Id)] = Id
        sims[s : s + len(D)] = D
    return ids, sims


def _weighted_sums(X: NDArray[np.float32], w: NDArray[np.float64], labels: NDArray[np.int64],
                   k: int) -> NDArray[np.float64]:
    """Σ w·x per cluster (k × d, float64), a block of rows at a time to bound memory."""
    S = np.zeros((k, X.shape[1]), dtype=np.float64)
    for s in range(0, len(X), _CHUNK):
        lab = labels[s : s + _CHUNK]
        M = sparse.csr_matrix((w[s : s + _CHUNK], (lab, np.arange(len(lab)))), shape=(k, len(lab)))
        S += M @ np.asarray(X[s : s + _CHUNK], dtype=np.float64)
    return S


def refine_leave_one_out(
    X: NDArray[np.float32],
    centers: NDArray[np.float32],
    sample_weight: ArrayLike | None = None,
    max_iter: int = 50,
    gpus: int = 0,
) -> tuple[NDArray[np.int64], NDArray[np.float32], list[int]]:
    """Starting from each row's nearest of ``centers``, reassign rows by leave-one-out
    similarity until no row moves (at most ``max_iter`` passes); returns the labels, the k
    unit centroids and the number of rows moved in each pass.

    Why: nearest-centroid (Lloyd) assignment can trap a heavy row. A string that occurs 35
    times pulls the centroid of whatever cluster it starts in towards itself, so that centroid
    stays its nearest even when the string is closer to another cluster's members. Here each
    row heavier than :data:`LIGHT_SHARE` of its cluster's weight compares the other
    clusters' centroids with its own cluster's centroid *computed without it* (Σ w·x of the
    other members, normalised), and moves to the best one when that beats its own (lighter
    rows move when another centroid is nearer than their own, as in Lloyd); a pass makes these moves (a row heavy for its clusters only when no other
    move touches them, see :func:`_pass_moves`; and not back to the cluster it last left
    while other moves remain), updates the sums and repeats.
    At a fixed point every row is nearest its own full centroid (adding a row to a
    cluster only raises its cosine to it), so later nearest-centroid assignment, the rule
    ``predict`` applies to new data, gives the same labels. A row alone in its cluster has no
    leave-one-out centroid and stays, and no cluster empties. The first pass costs one exact top-2
    search (n · k · d), the price of one assignment pass; later ones search all rows against
    the centroids that changed and only the rows whose best other cluster changed against
    all k.
    """
    n, k = len(X), len(centers)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    start = np.asarray(centers, dtype=np.float32)
    labels, _ = nearest(X, start, gpus)
    S = _weighted_sums(X, w, labels, k)
    norms = np.linalg.norm(S, axis=1)
    C = _unit(S, norms, start)
    moved: list[int] = []
    if k < 2:
        return labels, C, moved
    rows = np.arange(n)
    left = np.full(n, -1, dtype=np.int64)
    best, best_sim = _best_other(X, C, labels, gpus)
    for _ in range(max_iter):
        gain, wants = _wanted_moves(X, S, norms, labels, w, best_sim, k)
        # a row does not go back to the cluster it last left (that ends 2-cycles) until no
        # other move is left; then the rule is lifted once more
        idx = _pass_moves(rows[wants & (best != left)], gain, labels, best, w, k)
        if not len(idx) and wants.any() and (left >= 0).any():
            left[:] = -1
            idx = _pass_moves(rows[wants], gain, labels, best, w, k)
        moved.append(len(idx))
        if not len(idx):
            break
        cols = np.arange(len(idx))
        delta = sparse.csr_matrix((np.r_[w[idx], -w[idx]], (np.r_[best[idx], labels[idx]], np.r_[cols, cols])),
                                  shape=(k, len(idx)))
        S += delta @ np.asarray(X[idx], dtype=np.float64)
        changed = np.unique(np.r_[best[idx], labels[idx]])
        left[idx] = labels[idx]
        labels[idx] = best[idx]
        norms[changed] = np.linalg.norm(S[changed], axis=1)
        C[changed] = _unit(S[changed], norms[changed], start[changed])
        # Only the changed centroids moved. A row whose best other cluster did not change
        # keeps it unless a changed centroid is now nearer (one search against the changed
        # ones); a row whose best other changed (moved rows among them) is searched again
        # against all k. Later passes thus cost far less than the first.
        if 2 * len(changed) > k:  # most centroids moved: one full search is cheaper
            best, best_sim = _best_other(X, C, labels, gpus)
            continue
        stale = np.isin(best, changed)
        fresh = rows[~stale]
        if len(fresh):
            cid, csim = _best_other(X[fresh], C[changed], labels[fresh], gpus, changed)
            better = csim > best_sim[fresh]
            best[fresh[better]], best_sim[fresh[better]] = cid[better], csim[better]
        stale_rows = rows[stale]
        if len(stale_rows):
            best[stale_rows], best_sim[stale_rows] = _best_other(X[stale_rows], C, labels[stale_rows], gpus)
    return labels, C, moved


def _wanted_moves(X: NDArray[np.float32], S: NDArray[np.float64], norms: NDArray[np.float64],
                  labels: NDArray[np.int64], w: NDArray[np.float64], best_sim: NDArray[np.float64], k: int
                  ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Each row's gain from moving to its best other cluster over staying (its similarity to
    its own cluster's centroid computed without it), and which rows want to move."""
    n = len(X)
    xs = np.empty(n, dtype=np.float64)  # x · S_own
    for s in range(0, n, _CHUNK):
        xs[s : s + _CHUNK] = np.einsum("ij,ij->i", np.asarray(X[s : s + _CHUNK], dtype=np.float64),
                                       S[labels[s : s + _CHUNK]])
    rest = np.sqrt(np.maximum(norms[labels] ** 2 - 2.0 * w * xs + w * w, 0.0))
    members = np.bincount(labels, minlength=k)
    loo = np.where((members[labels] > 1) & (rest > 1e-9), (xs - w) / np.maximum(rest, 1e-12), np.inf)
    gain = best_sim - loo
    # A row under LIGHT_SHARE of its cluster's weight has a leave-one-out centroid within
    # a few percent of the full one: it follows the nearest-centroid rule, else border
    # rows reshuffle for many passes without changing the fit (bench/cluster.py).
    own_w = np.bincount(labels, weights=w, minlength=k)[labels]
    lloyd = best_sim > xs / np.maximum(norms[labels], 1e-12) + 1e-6
    return gain, (gain > 1e-6) & ((w > LIGHT_SHARE * own_w) | lloyd)


LIGHT_SHARE = 0.05  # a move of a row under this share of both clusters' weight is "light"


def _pass_moves(cand: NDArray[np.int64], gain: NDArray[np.float64], labels: NDArray[np.int64],
                best: NDArray[np.int64], w: NDArray[np.float64], k: int) -> NDArray[np.int64]:
    """The moves of one pass. Moves that all see the same centroids but change them
    together oscillate when a row is heavy for its clusters: it moves in, the light members
    it now dominates move out, then it moves back. So a heavy move (over
    :data:`LIGHT_SHARE` of its source's or destination's weight) is made only when no
    other move of this pass touches its two clusters, by decreasing gain; light moves, which
    barely shift a centroid, are all made, except into or out of a heavy move's clusters.
    A cluster never empties: when every member would leave, the one that gains least stays."""
    W = np.bincount(labels, weights=w, minlength=k)
    order = cand[np.argsort(-gain[cand], kind="stable")]
    src, dst = labels[order], best[order]
    heavy = w[order] > LIGHT_SHARE * np.minimum(W[src], W[dst])
    used = np.zeros(k, dtype=bool)
    keep = np.zeros(len(order), dtype=bool)
    for j in np.nonzero(heavy)[0].tolist():
        a, b = src[j], dst[j]
        if not (used[a] or used[b]):
            used[a] = used[b] = keep[j] = True
    keep |= ~heavy & ~used[src] & ~used[dst]
    idx = order[keep]
    members = np.bincount(labels, minlength=k)
    emptied = np.nonzero((np.bincount(labels[idx], minlength=k) == members) & (members > 0))[0]
    if len(emptied):  # rows are in decreasing gain: the last of each emptied cluster stays
        gone = set(emptied.tolist())
        last = {c: i for i, c in enumerate(labels[idx].tolist()) if c in gone}
        idx = np.delete(idx, list(last.values()))
    return idx


def _best_other(X: NDArray[np.float32], centers: NDArray[np.float32], own: NDArray[np.int64],
                gpus: int = 0, ids_of: NDArray[np.int64] | None = None) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each row's nearest centroid other than its own cluster ``own``, and the cosine (-inf
    when there is none). ``ids_of``: the cluster id of each row of ``centers`` when they are
    a subset of the clusters."""
    ids, sims = _top2(X, centers, gpus)
    if ids_of is not None:
        ids = ids_of[ids]
    first_is_own = ids[:, 0] == own
    if ids.shape[1] < 2:
        return ids[:, 0], np.where(first_is_own, -np.inf, sims[:, 0].astype(np.float64))
    return (np.where(first_is_own, ids[:, 1], ids[:, 0]),
            np.where(first_is_own, sims[:, 1], sims[:, 0]).astype(np.float64))


def _unit(S: NDArray[np.float64], norms: NDArray[np.float64], fallback: NDArray[np.float32]) -> NDArray[np.float32]:
    """Unit centroids from weighted sums; an empty cluster keeps its ``fallback`` centroid."""
    out = (S / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    empty = norms <= 1e-12
    out[empty] = fallback[empty]
    return out


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Set faiss's OpenMP thread count for the block and restore it (it is process-global)."""
    before = faiss.omp_get_max_threads()
    if n is not None:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


SMALL_FIT_WORK = 2e7  # n_train · k under which restarts cost well under a second
SMALL_FIT_RESTARTS = 10


class SphericalKMeans:
    """Spherical k-means in scikit-learn style; two-level on CPU for large ``n · k``.

    ``two_level=None`` decides from :data:`TWO_LEVEL_MIN_WORK`. Fitted state:
    ``cluster_centers_`` (k × d unit float32), ``labels_``, ``similarity_`` (cosine to own
    centroid), ``sizes_`` (points, or summed ``sample_weight``, per cluster),
    ``small_clusters_`` (size < ``min_cluster_size``), ``inertia_`` (Σ w·(1 − cosine)),
    ``two_level_`` and ``coarse_centers_`` / ``center_parent_`` when two-level, ``gpus_``,
    ``refine_moves_`` (rows moved per leave-one-out pass; ``refine=True`` runs
    :func:`refine_leave_one_out` after Lloyd, up to ``refine_iter`` passes, when there are
    at most :data:`REFINE_MAX_ROWS` distinct rows; ``refine_rows_``: the rows it refined,
    0 when it did not run).

    ``gpu=None`` (default) fits and assigns on every GPU faiss sees, which is none unless
    faiss-gpu is installed; on a GPU the fit stays flat at any k.
    """

    def __init__(
        self,
        n_clusters: int,
        seed: int = 0,
        n_iter: int = 20,
        two_level: bool | None = None,
        min_cluster_size: int = 3,
        max_points_per_centroid: int = 256,
        n_threads: int | None = None,
        n_init: int | None = None,
        gpu: bool | None = None,
        refine: bool = False,
        refine_iter: int = 50,
    ) -> None:
        self.n_clusters = n_clusters
        self.refine = refine
        self.refine_iter = refine_iter
        self.gpu = gpu
        self.n_init = n_init
        self.seed = seed
        self.n_iter = n_iter
        self.two_level = two_level
        self.min_cluster_size = min_cluster_size
        self.max_points_per_centroid = max_points_per_centroid
        self.n_threads = n_threads

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, X: ArrayLike, sample_weight: ArrayLike | None = None) -> SphericalKMeans:
        """Fit centroids to unit vectors ``X``; ``sample_weight`` counts repeated features."""
        Xc = check_vectors(X)
        w = self._check_weights(sample_weight, len(Xc))
        k = self.n_clusters
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise FeatdiscoError(f"n_clusters must be a positive integer, got {k!r}")
        if self.n_iter < 1 or self.max_points_per_centroid < 1:
            raise FeatdiscoError("n_iter and max_points_per_centroid must be at least 1")
        groups = distinct_rows(Xc)
        Xu, wu = Xc, w
        if groups is not None:
            first, inverse = groups
            Xu = np.ascontiguousarray(Xc[np.sort(first)])
            order = np.argsort(first)  # keep distinct rows in order of first appearance
            counts = np.bincount(inverse, weights=w, minlength=len(first))
            wu = counts[order].astype(np.float32)
        n_distinct = len(Xu)
        if k > n_distinct:
            raise FeatdiscoError(
                f"n_clusters={k} is larger than the number of distinct vectors ({n_distinct} "
                f"of {len(Xc)}); choose at most {n_distinct} clusters"
            )
        self.gpus_ = self._gpus()
        n_train = min(n_distinct, k * self.max_points_per_centroid)
        use_two = self.two_level
        if use_two is None:  # a GPU does the flat fit's n·k work quickly: two-level is for CPU
            use_two = n_train * k > TWO_LEVEL_MIN_WORK and self.gpus_ == 0
        with _threads(self.n_threads):
            self.coarse_centers_: NDArray[np.float32] | None = None
            self.center_parent_: NDArray[np.int64] | None = None
            if use_two and k > 1:
                centers = self._fit_two_level(Xu, wu, k)
            else:
                centers = self._kmeans(Xu, wu, k, self.seed)
            self.refine_moves_: list[int] = []
            self.refine_rows_ = 0
            if self.refine and k > 1 and n_distinct <= REFINE_MAX_ROWS:  # frees strings Lloyd traps
                self.refine_rows_ = n_distinct
                _, centers, self.refine_moves_ = refine_leave_one_out(
                    Xu, centers, wu, self.refine_iter, self.gpus_)
            self.cluster_centers_ = centers
            self.labels_, self.similarity_ = nearest(Xc, centers, self.gpus_)
        self.two_level_ = bool(use_two and k > 1)
        weights = np.ones(len(Xc)) if w is None else w.astype(np.float64)
        self.sizes_ = np.bincount(self.labels_, weights=weights, minlength=k)
        if w is None:
            self.sizes_ = self.sizes_.astype(np.int64)
        self.small_clusters_ = self.sizes_ < self.min_cluster_size
        self.inertia_ = float(np.dot(weights, 1.0 - self.similarity_.astype(np.float64)))
        return self

    def _fit_two_level(
        self,
        X: NDArray[np.float32],
        w: NDArray[np.float32] | None,
        k: int,
    ) -> NDArray[np.float32]:
        """Coarse k1 ≈ √k cells, then k split over cells by size, k-means inside each cell.

        Rows are distinct here, so a cell can take as many clusters as it has rows.
        """
        k1 = max(1, round(math.sqrt(k)))
        coarse = self._kmeans(X, w, k1, self.seed)
        cell, _ = nearest(X, coarse, self.gpus_)
        sizes = np.bincount(cell, weights=w, minlength=k1).astype(np.float64)
        members = np.argsort(cell, kind="stable")
        bounds = np.searchsorted(cell[members], np.arange(k1 + 1))
        cells = [members[bounds[c] : bounds[c + 1]] for c in range(k1)]
        keep = [c for c in range(k1) if len(cells[c]) > 0]  # faiss can leave a cell empty
        caps = np.array([len(cells[c]) for c in keep], dtype=np.int64)
        alloc = allocate(sizes[keep], caps, k)
        parts, parent = [], []
        for c, kc in zip(keep, alloc, strict=True):
            idx = cells[c]
            wc = None if w is None else w[idx]
            # seed per cell so results do not depend on the order cells are processed
            parts.append(self._kmeans(X[idx], wc, int(kc), self.seed + 7919 * (c + 1)))
            parent.append(np.full(int(kc), c, dtype=np.int64))
        self.coarse_centers_ = coarse
        self.center_parent_ = np.concatenate(parent)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def _kmeans(
        self, X: NDArray[np.float32], w: NDArray[np.float32] | None, k: int, seed: int
    ) -> NDArray[np.float32]:
        """One faiss spherical k-means; k = 1 is the normalised (weighted) mean.

        Seeded with AFK-MC² (a cheap k-means++ approximation): on bench/cluster.py data it
        raised the mean cosine to the centroid from 0.785 to 0.795 over faiss's default
        random seeding, at about the cost of one Lloyd iteration.
        """
        if k == 1:
            mean = np.average(np.asarray(X, dtype=np.float64), axis=0, weights=w)
            norm = np.linalg.norm(mean)
            out = mean / norm if norm > 1e-12 else np.asarray(X[0], dtype=np.float64)
            return out.astype(np.float32)[None, :]
        km = faiss.Kmeans(
            X.shape[1],
            k,
            spherical=True,
            seed=seed,
            nredo=self._restarts(len(X), k),
            niter=self.n_iter,
            max_points_per_centroid=self.max_points_per_centroid,
            min_points_per_centroid=1,  # small cells are expected; silence faiss's warning
            init_method=faiss.ClusteringInitMethod_AFK_MC2,
            gpu=self.gpus_ or False,
        )
        km.train(np.ascontiguousarray(X), weights=w)
        centers = np.array(km.centroids, dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        return centers

    def _gpus(self) -> int:
        """``gpu=None``: every GPU faiss sees (none with faiss-cpu); True: the same, but
        having none is an error; False: CPU."""
        if self.gpu is False:
            return 0
        n = gpu_count()
        if self.gpu and n == 0:
            raise FeatdiscoError("gpu=True, but faiss sees no GPU: install faiss-gpu (or "
                                 "faiss-gpu-cu12) in place of faiss-cpu, or leave gpu unset")
        return n

    def _restarts(self, n: int, k: int) -> int:
        """``n_init``, or by default several restarts (keeping the best objective) when a
        fit is cheap: small fits are where one unlucky seeding merges two clear themes."""
        if self.n_init is not None:
            return max(1, self.n_init)
        return SMALL_FIT_RESTARTS if min(n, k * self.max_points_per_centroid) * k <= SMALL_FIT_WORK else 1

    @staticmethod
    def _check_weights(sample_weight: ArrayLike | None, n: int) -> NDArray[np.float32] | None:
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float32)
        if w.shape != (n,) or not np.isfinite(w).all() or (w <= 0).any():
            raise FeatdiscoError(f"sample_weight must be {n} positive finite numbers")
        return w

    # -- inference -------------------------------------------------------------------------

    def assign(self, X: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Nearest centroid of each new unit vector, and its cosine similarity to it."""
        if not hasattr(self, "cluster_centers_"):
            raise FeatdiscoError("SphericalKMeans is not fitted yet: call fit first")
        Xc = check_vectors(X)
        if Xc.shape[1] != self.cluster_centers_.shape[1]:
            raise FeatdiscoError(
                f"X has dimension {Xc.shape[1]}, the clusters were fitted on "
                f"{self.cluster_centers_.shape[1]}"
            )
        with _threads(self.n_threads):
            return nearest(Xc, self.cluster_centers_, getattr(self, "gpus_", 0))

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """Cluster index of each new unit vector."""
        return self.assign(X)[0]
