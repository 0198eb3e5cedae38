"""The scale benchmark: a 100k-transcript discovery run with the fake LLM at zero latency (in
its own process), the real MiniLM embedder and faiss clustering. Prints seconds per stage,
the run's peak RSS (target < 8 GB), and a linear extrapolation to 1M transcripts.

    python bench/scale.py [--transcripts 100000] [--executor local|ray] [--batch] [--keep]

The transcripts are bench/pipeline.py's generator (1-2 turns, half with thoughts); the fake
rater gives 12 Zipf-distributed features per piece from a 6,000-phrase vocabulary, so the
embed stage here embeds few distinct strings: real raters give mostly unique strings (a
public replication: 33.9k unique of 42.5k), and docs/scale.md estimates that cost
separately from measured embedder throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import REPO, generate  # bench/ is not a package: imported by path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcripts", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--executor", choices=("local", "ray"), default="local")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="featdisco-bench-scale-"))
    data = tmp / "transcripts.jsonl"
    generate(data, args.transcripts)
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                               "--handler", "tests.pipeline_fakes:zipf_handler"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    run_dir = tmp / "run"
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "featdisco", "run", str(data), "--run-dir", str(run_dir),
             "--llm", "openai", "--model", "fake-rater", "--base-url",
             f"http://127.0.0.1:{port}/v1", "--concurrency", str(args.concurrency),
             "--executor", args.executor, "-q"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"featdisco run failed:\n{proc.stderr.read() if proc.stderr else ''}")
    finally:
        server.terminate()
        server.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rss_gb = usage.ru_maxrss / 1024 / 1024
    print(f"{args.transcripts:,} transcripts, executor {args.executor}, fake LLM at zero latency, "
          f"concurrency {args.concurrency}, {os.cpu_count()} CPUs")
    total = 0.0
    for name, rec in manifest["stages"].items():
        total += rec["seconds"]
        counts = {k: v for k, v in rec["counts"].items() if not isinstance(v, dict)}
        print(f"  {name:<10} {rec['seconds']:8.1f} s   {counts}")
    scale = 1_000_000 / args.transcripts
    print(f"total wall {wall:.1f} s, peak RSS {rss_gb:.2f} GB (target < 8 GB)")
    print(f"linear extrapolation to 1M transcripts on this machine: {total * scale / 3600:.1f} h "
          f"of stage time (clustering grows faster than linearly with k; see docs/scale.md)")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
