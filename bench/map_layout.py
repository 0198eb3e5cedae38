"""How long the report's map layout takes on a big run, with its point cap.

Writes a synthetic run folder (default 1M features over 500k distinct strings, 384-d unit
embeddings from a mixture of 4,000 blobs, 3 kinds) holding just what the map reads —
assignments, feature texts, strings, embeddings, centroids — then times
:func:`featdisco.report.map.map_layout` at each cap in its own process (numba's
compilation counted, as every ``featdisco report`` pays it: UMAP's functions are not
cached between processes). Prints wall and CPU seconds.

    python bench/map_layout.py [--n 1000000] [--distinct 500000] [--caps 10000,20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("user", "thought", "response")


def generate(root: Path, n: int, distinct: int, blobs: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((blobs, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    blob = np.minimum((rng.pareto(1.2, distinct) * blobs / 20).astype(np.int64), blobs - 1)
    emb = np.lib.format.open_memmap(root / "embeddings.npy", mode="w+", dtype=np.float32, shape=(distinct, dim))
    for a in range(0, distinct, 100_000):
        b = min(distinct, a + 100_000)
        x = centers[blob[a:b]] + 0.06 * rng.standard_normal((b - a, dim)).astype(np.float32)
        emb[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    emb.flush()
    pq.write_table(pa.table({"text": [f"s{i}" for i in range(distinct)]}), root / "strings.parquet")
    sid = rng.integers(0, distinct, n)
    cid = blob[sid]
    kind_of_blob = np.arange(blobs) % 3
    pq.write_table(pa.table({"text": pa.array([f"s{i}" for i in sid]),
                             "kind": pa.array([KINDS[k] for k in kind_of_blob[cid]])}), root / "features.parquet")
    # clusters numbered by kind, as the pipeline numbers them
    order = np.argsort(kind_of_blob, kind="stable")
    new_id = np.empty(blobs, np.int64)
    new_id[order] = np.arange(blobs)
    pq.write_table(pa.table({"cluster_id": new_id[cid]}), root / "assignments.parquet")
    rows = []
    for k, kind in enumerate(KINDS):
        mine = order[kind_of_blob[order] == k]
        np.save(root / f"centroids_{kind}.npy", centers[mine])
        rows += [{"cluster_id": int(new_id[b]), "kind": kind, "cluster": j,
                  "size": int((cid == b).sum())} for j, b in enumerate(mine)]
    pq.write_table(pa.Table.from_pylist(rows), root / "clusters.parquet")


def child(root: Path, cap: int) -> None:
    from featdisco.report.map import map_layout

    clusters = pq.read_table(root / "clusters.parquet")
    t0, c0 = time.perf_counter(), time.process_time()
    layout = map_layout(root, clusters, max_points=cap)
    # CPU seconds as well as wall: on a shared machine the wall time says more about the
    # neighbours than about the layout (UMAP runs single-threaded here, with a seed)
    print(json.dumps({"cap": cap, "seconds": round(time.perf_counter() - t0, 1),
                      "cpu_seconds": round(time.process_time() - c0, 1),
                      "points": layout.shard["points"], "features_drawn": layout.shard["features_drawn"],
                      "labels": len(layout.positions)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=500_000)
    ap.add_argument("--blobs", type=int, default=4000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--caps", default="10000,20000")
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--child", type=int)
    args = ap.parse_args()
    if args.child:
        child(args.dir, args.child)
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="map-bench-"))
    if not (root / "clusters.parquet").exists():
        t0 = time.perf_counter()
        generate(root, args.n, args.distinct, args.blobs, args.dim)
        print(f"generated {args.n:,} features, {args.distinct:,} distinct in {time.perf_counter() - t0:.0f}s at {root}")
    for cap in (int(c) for c in args.caps.split(",")):
        subprocess.run([sys.executable, __file__, "--dir", str(root), "--child", str(cap)], check=True)


if __name__ == "__main__":
    main()
