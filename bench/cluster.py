"""Benchmark featdisco's SphericalKMeans (two-level) against full faiss k-means and
scikit-learn MiniBatchKMeans on the same vectors, in the same run.

Data (default 1M × 384 float32, written once to a .npy and memory-mapped by every method):
a hierarchical mixture on the unit sphere that mimics sentence-embedding features —
50 "topics" (random unit directions), 5,000 blobs whose centres scatter around a topic,
blob sizes drawn from a Zipf-like (Pareto, α = 1.2) law so a few blobs are large and many
are small, each blob with its own spread, a shared mean direction so that all vectors sit in
one cone (real embeddings have mean cosine ≈ 0.1–0.2), and 5 % unstructured noise points.

Each method runs in its own child process (so peak RSS is its own, VmHWM; the
memory-mapped data counts once touched) and writes its centroids. The parent scores every
method the same way: normalise the centroids, assign each point to its highest-cosine
centroid, inertia = Σ (1 − cosine); plus NMI against the planted blobs.

Caps, stated: full faiss k-means runs ``--iters`` Lloyd iterations (default 20, the same as
ours) on faiss's default subsample of 256 points per centroid (512k points at k = 2,000);
MiniBatchKMeans runs ``--mbk-epochs`` passes (default 3) with batch ``--batch`` (4,096),
k-means++ init on 3·k points, early stopping left on.

``--refine`` adds ours followed by :func:`~featdisco.stages.kmeans.refine_leave_one_out`
(what the cluster stage runs), timing the refinement alone and its passes.

    python bench/cluster.py [--n 1000000] [--k 2000] [--threads 2] [--skip-full] [--skip-mbk]
    python bench/cluster.py --n 100000 --k 2000 --skip-full --skip-mbk --skip-two-level --refine
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(path: Path, labels_path: Path, n: int, d: int, n_blobs: int, seed: int) -> None:
    """Write the mixture described in the module docstring as a float32 .npy."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d)
    common /= np.linalg.norm(common)
    topics = rng.standard_normal((50, d))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    topic_of = rng.integers(0, 50, n_blobs)
    centres = topics[topic_of] + 0.9 * rng.standard_normal((n_blobs, d)) / np.sqrt(d)
    centres += 0.35 * common
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.pareto(1.2, n_blobs) + 1.0
    spread = rng.uniform(0.35, 0.7, n_blobs)  # noise norm relative to the unit centre
    n_noise = n // 20
    y = np.full(n, -1, dtype=np.int64)
    y[n_noise:] = rng.choice(n_blobs, n - n_noise, p=weights / weights.sum())
    rng.shuffle(y)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 100_000):
        yb = y[s : s + 100_000]
        noise = rng.standard_normal((len(yb), d)) / np.sqrt(d)
        base = np.where(yb[:, None] >= 0, centres[np.maximum(yb, 0)], 0.35 * common)
        scale = np.where(yb >= 0, spread[np.maximum(yb, 0)], 1.0)[:, None]
        block = base + scale * noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        X[s : s + len(yb)] = block.astype(np.float32)
    X.flush()
    np.save(labels_path, y)


def worker(method: str, data: Path, out: Path, k: int, args: argparse.Namespace) -> None:
    """Fit one method on the memory-mapped data and save its centroids."""
    X = np.load(data, mmap_mode="r")
    t = time.perf_counter()
    if method == "two-level":
        from featdisco.stages.kmeans import SphericalKMeans

        km = SphericalKMeans(k, seed=args.seed, n_iter=args.iters, two_level=True)
        centers = km.fit(X).cluster_centers_
    elif method == "ours-auto":
        from featdisco.stages.kmeans import SphericalKMeans

        km = SphericalKMeans(k, seed=args.seed, n_iter=args.iters)
        centers = km.fit(X).cluster_centers_
    elif method == "refined":
        from featdisco.stages.kmeans import SphericalKMeans, refine_leave_one_out

        km = SphericalKMeans(k, seed=args.seed, n_iter=args.iters)
        km.fit(X)
        t_fit = time.perf_counter() - t
        before = float(np.average(km.similarity_))
        t_ref = time.perf_counter()
        _, centers, moved = refine_leave_one_out(np.ascontiguousarray(X), km.cluster_centers_,
                                                 max_iter=args.refine_iter)
        print(f"refine: {time.perf_counter() - t_ref:.1f} s after a {t_fit:.1f} s fit "
              f"({'two-level' if km.two_level_ else 'flat'}); {len(moved)} passes, rows moved per pass "
              f"{moved}; mean cos to the centroid before refining {before:.4f}")
    elif method == "faiss-full":
        import faiss

        fk = faiss.Kmeans(X.shape[1], k, spherical=True, seed=args.seed, niter=args.iters)
        fk.train(np.ascontiguousarray(X))
        centers = fk.centroids
        # include the one assignment pass every method needs to produce labels
        fk.index.search(np.ascontiguousarray(X), 1)
    elif method == "minibatch":
        from sklearn.cluster import MiniBatchKMeans

        mb = MiniBatchKMeans(
            k, batch_size=args.batch, max_iter=args.mbk_epochs, random_state=args.seed,
            init_size=3 * k, n_init=1,
        )
        mb.fit(X)
        centers = mb.cluster_centers_
    else:
        raise SystemExit(f"unknown method {method}")
    secs = time.perf_counter() - t
    np.save(out, np.asarray(centers, dtype=np.float32))
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    print(f"{secs:.3f} {int(hwm.split()[1])}")


def run_child(method: str, data: Path, out: Path, args: argparse.Namespace) -> tuple[float, int]:
    """Fit seconds (timed inside the child, after imports) and its peak RSS (VmHWM) in KiB.

    VmHWM, not wait4's ru_maxrss: the latter starts from the parent's RSS at fork.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--worker", method, "--data", str(data), "--out", str(out),
           "--k", str(args.k), "--iters", str(args.iters), "--seed", str(args.seed),
           "--batch", str(args.batch), "--mbk-epochs", str(args.mbk_epochs)]
    cmd += ["--refine-iter", str(args.refine_iter)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed with status {proc.returncode}")
    *notes, last = proc.stdout.strip().splitlines()
    for note in notes:
        print(f"{method:>11}: {note}")
    secs, hwm = last.split()
    return float(secs), int(hwm)


def score(X: np.ndarray, centers: np.ndarray) -> tuple[float, np.ndarray]:
    """Σ (1 − cos) to the nearest normalised centroid, and the labels (same for every method)."""
    from featdisco.stages.kmeans import nearest

    c = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    labels, sims = nearest(X, np.ascontiguousarray(c, dtype=np.float32))
    return float(np.sum(1.0 - sims.astype(np.float64))), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=2000)
    ap.add_argument("--blobs", type=int, default=5000)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--mbk-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--skip-two-level", action="store_true")
    ap.add_argument("--skip-mbk", action="store_true")
    ap.add_argument("--auto", action="store_true", help="also run ours with two_level=None")
    ap.add_argument("--refine", action="store_true",
                    help="also run ours (automatic two-level) followed by the leave-one-out refinement")
    ap.add_argument("--refine-iter", type=int, default=50, help="cap on refinement passes")
    ap.add_argument("--worker")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.out, args.k, args)
        return

    from sklearn.metrics import normalized_mutual_info_score

    with tempfile.TemporaryDirectory(prefix="featdisco-bench-cluster-") as tmp:
        data, ypath = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        t = time.perf_counter()
        generate(data, ypath, args.n, args.d, args.blobs, args.seed)
        print(f"data: {args.n:,} × {args.d} float32, {args.blobs:,} blobs + 5% noise, "
              f"k = {args.k:,}, {args.threads} threads (generated in {time.perf_counter() - t:.0f} s)")
        methods = ([] if args.skip_two_level else ["two-level"]) + (["ours-auto"] if args.auto else [])
        methods += ["refined"] if args.refine else []
        methods += ([] if args.skip_full else ["faiss-full"]) + ([] if args.skip_mbk else ["minibatch"])
        X = np.load(data, mmap_mode="r")
        y = np.load(ypath)
        rows = []
        for m in methods:
            out = Path(tmp) / f"{m}.npy"
            secs, rss = run_child(m, data, out, args)
            inertia, labels = score(X, np.load(out))
            nmi = normalized_mutual_info_score(y, labels)
            rows.append((m, secs, rss, inertia, nmi))
            print(f"{m:>11}: {secs:8.1f} s  peak RSS {rss / 1024:7.0f} MiB  "
                  f"inertia {inertia:12.1f}  mean cos {1 - inertia / args.n:.4f}  NMI {nmi:.4f}",
                  flush=True)
        base = rows[0]
        for m, secs, _, inertia, _ in rows[1:]:
            print(f"{base[0]} vs {m}: {secs / base[1]:.1f}× faster, "
                  f"inertia {base[3] / inertia:.4f}× theirs")


if __name__ == "__main__":
    main()
