"""The scale benchmark: a 100k-transcript discovery run with the fake LLM at zero latency (in
its own process), the real MiniLM embedder and faiss clustering. Prints seconds per stage,
the run's peak RSS (target < 8 GB), and a linear extrapolation to 1M transcripts.

    python bench/scale.py [--transcripts 100000] [--executor local|ray] [--rater unique|zipf] [--keep]

The transcripts are bench/pipeline.py's generator (1-2 turns, half with thoughts). The
default rater (tests/pipeline_fakes.py ``unique_handler``) gives 12 features per piece: 3
from a Zipf vocabulary, 4 from the piece's own words, 5 that also carry a word of a synthetic
lexicon, so about half of all features are distinct at 100k transcripts, as with a frontier
rater (a public replication: 33.9k distinct of 42.5k, at a much smaller scale).
``--rater zipf`` draws all 12 from a 6,000-phrase vocabulary, which leaves embed and
cluster almost nothing to do and so understates their time and memory.

Peak RSS is per stage (each stage resets the kernel's high-water mark, see
``featdisco.rundir.reset_peak_rss``); the run's peak is the largest of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import (  # bench/ is not a package: imported by path
    benchmark_args,
    print_stages,
    run_benchmark,
)


def main() -> None:
    args = benchmark_args(__doc__.splitlines()[0], 100_000, "unique")
    wall, rss, manifest = run_benchmark(args.transcripts, args.concurrency, args.executor, args.keep,
                                        args.rater)
    print(f"{args.transcripts:,} transcripts, executor {args.executor}, fake LLM at zero latency "
          f"({args.rater} rater), "
          f"concurrency {args.concurrency}, {os.cpu_count()} CPUs")
    total = print_stages(manifest)
    print(f"total wall {wall:.1f} s, peak RSS {rss / 1024:.2f} GB (target < 8 GB)")
    scale = 1_000_000 / args.transcripts
    print(f"linear extrapolation to 1M transcripts on this machine: {total * scale / 3600:.1f} h "
          f"of stage time (clustering grows faster than linearly with k; see docs/scale.md)")


if __name__ == "__main__":
    main()
