"""Peak memory of the split and featurize stages alone, at several run sizes.

Both stages stream (pieces to and from ``pieces.parquet``, features to ``features.parquet``),
so their peaks should stay flat as the run grows; this prints each stage's peak RSS (as the
run manifest records it) per size, and the growth from the smallest size to the largest.
The fake rater runs at zero latency in its own process; nothing is embedded.

    .venv/bin/python bench/featurize_memory.py [--transcripts 20000 100000] [--rater zipf]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from featdisco.pipeline import Pipeline, PipelineConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import REPO, generate  # bench/ is not a package: imported by path


def measure(transcripts: int, rater: str) -> dict[str, dict[str, float]]:
    """Each stage's peak RSS in MiB and wall seconds, for one fresh run in a subprocess."""
    out = subprocess.run([sys.executable, __file__, "--one", str(transcripts), "--rater", rater],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def one(transcripts: int, rater: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="featdisco-bench-featmem-"))
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                               "--handler", f"tests.pipeline_fakes:{rater}_handler"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        data = tmp / "transcripts.jsonl"
        generate(data, transcripts)
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        os.environ["OPENAI_API_KEY"] = "sk-bench"
        cfg = PipelineConfig(llm="openai", model="fake-rater", concurrency=256,
                             base_url=f"http://127.0.0.1:{port}/v1")
        pipe = Pipeline(tmp / "run", cfg, log=lambda _: None)
        pipe.run([data], stages=("split", "featurize"))  # the stage API (Pipeline.featurize is gone)
        stages = json.loads((tmp / "run" / "manifest.json").read_text())["stages"]
        print(json.dumps({s: {"peak": stages[s]["peak_rss_mib"], "seconds": stages[s]["seconds"],
                              "rows": stages[s]["counts"].get("features", 0)}
                          for s in ("split", "featurize")}))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcripts", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--rater", choices=("zipf", "unique"), default="zipf")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.rater)
        return
    runs = {n: measure(n, args.rater) for n in sorted(args.transcripts)}
    for n, r in runs.items():
        print(f"{n:>9,} transcripts: split {r['split']['seconds']:6.1f} s, peak "
              f"{r['split']['peak']:6.0f} MiB; featurize {r['featurize']['seconds']:6.1f} s, "
              f"peak {r['featurize']['peak']:6.0f} MiB ({r['featurize']['rows']:,} features)")
    lo, hi = min(runs), max(runs)
    for stage in ("split", "featurize"):
        grow = runs[hi][stage]["peak"] - runs[lo][stage]["peak"]
        print(f"{stage}: peak grows {grow:+.0f} MiB from {lo:,} to {hi:,} transcripts "
              f"({hi / lo:.0f}x the data)")


if __name__ == "__main__":
    main()
