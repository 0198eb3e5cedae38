"""Probe benchmark: 1,000 targets × 100k samples with 5,000 user clusters (target ≤ 5 min
on 2 cores). Synthetic activations: each sample has ~8 user clusters drawn Zipf-like; each
target has a base rate between 0.5% and 20%, and one in ten depends on a user cluster.

    python bench/probe.py [--samples 100000] [--targets 1000] [--users 5000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import sparse

from featdisco.analysis.probes import ProbeData, fit_probes


def synthetic(n: int, d: int, T: int, seed: int = 0) -> ProbeData:
    rng = np.random.default_rng(seed)
    k = 8
    p = 1.0 / np.arange(1, d + 1) ** 0.8
    p /= p.sum()
    cols = rng.choice(d, size=(n, k), p=p)
    X = sparse.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), cols.ravel())), shape=(n, d))
    X.sum_duplicates()
    X.data[:] = 1.0
    base = rng.uniform(0.005, 0.2, T)
    Y = rng.random((n, T)) < base
    Xc = X.tocsc()
    for t in range(0, T, 10):  # planted links: user cluster t/10 causes target t with p = 0.9
        has = Xc[:, t // 10].toarray().ravel() > 0
        Y[:, t] |= has & (rng.random(n) < 0.9)
    groups = np.arange(n) // 2  # two samples per transcript
    return ProbeData("response", X, sparse.csc_matrix(Y.astype(np.int8)), groups,
                     np.arange(d), np.arange(T))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-validation", action="store_true",
                    help="cut at 0 instead of choosing the threshold on a validation split (one fit, not two)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = synthetic(args.samples, args.users, args.targets)
    t1 = time.perf_counter()
    df = fit_probes(data, n_jobs=args.jobs, validation_size=None if args.no_validation else 0.25)
    t2 = time.perf_counter()
    planted = df.iloc[::10]
    top_is_cause = sum(bool(row["top_user_clusters"]) and row["top_user_clusters"][0] == t // 10
                       for t, row in planted.iterrows())
    print(f"cpus={os.cpu_count()} jobs={args.jobs} load={os.getloadavg()[0]:.1f} samples={args.samples:,} "
          f"targets={args.targets:,} user_clusters={args.users:,} nnz={data.X.nnz:,}")
    print(f"data {t1 - t0:.1f}s; fit+score {t2 - t1:.1f}s ({(t2 - t1) / args.targets * 1000:.0f} ms/target)")
    print(f"beat baseline: {int(df['beats_baseline'].sum())} of {len(df)}; beat the permutation null "
          f"(BH q < 0.05): {int(df['beats_null'].sum())}, of them planted {int(df.iloc[::10]['beats_null'].sum())} "
          f"of {len(df.iloc[::10])}; planted links found: "
          f"{top_is_cause} of {len(planted)} (planted cause is the top weight); "
          f"median F1 planted {planted['f1'].median():.3f}, others {df.drop(planted.index)['f1'].median():.3f}")


if __name__ == "__main__":
    main()
