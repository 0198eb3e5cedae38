"""The scale benchmark: a 100k-transcript discovery run with the fake LLM at zero latency (in
its own process), the real MiniLM embedder and faiss clustering. Prints seconds per stage,
the run's peak RSS (target < 8 GB), and a linear extrapolation to 1M transcripts.

    python bench/scale.py [--transcripts 100000] [--executor local|ray] [--keep]

The transcripts are bench/pipeline.py's generator (1-2 turns, half with thoughts); the fake
rater gives 12 Zipf-distributed features per piece from a 6,000-phrase vocabulary, so the
embed stage here embeds few distinct strings: real raters give mostly unique strings (a
public replication: 33.9k unique of 42.5k), and docs/scale.md estimates that cost
separately from measured embedder throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import print_stages, run_benchmark  # bench/ is not a package: imported by path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcripts", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--executor", choices=("local", "ray"), default="local")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    wall, rss, manifest = run_benchmark(args.transcripts, args.concurrency, args.executor, args.keep)
    print(f"{args.transcripts:,} transcripts, executor {args.executor}, fake LLM at zero latency, "
          f"concurrency {args.concurrency}, {os.cpu_count()} CPUs")
    total = print_stages(manifest)
    print(f"total wall {wall:.1f} s, peak RSS {rss / 1024:.2f} GB (target < 8 GB)")
    scale = 1_000_000 / args.transcripts
    print(f"linear extrapolation to 1M transcripts on this machine: {total * scale / 3600:.1f} h "
          f"of stage time (clustering grows faster than linearly with k; see docs/scale.md)")


if __name__ == "__main__":
    main()
