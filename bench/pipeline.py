"""Benchmark the whole discovery run: 10k transcripts, the fake LLM at zero latency (in its
own process), the real MiniLM embedder and faiss clustering. Prints wall time per stage and
the run's peak RSS (targets: ≤ 15 minutes, ≤ 4 GB), and the embed stage's share of the run.

    python bench/pipeline.py [--transcripts 10000] [--concurrency 256] [--executor local|ray] [--keep]
                             [--embedder minilm|static|st:PATH|api:MODEL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORDS = ["model", "user", "answer", "reason", "budget", "token", "roleplay", "code", "python", "error", "fix", "explain", "step", "check", "again", "travel", "recipe", "poem", "proof", "email", "review", "plan", "risk", "policy", "safety", "weather", "chess", "tax", "movie"]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(path: Path, n: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            messages = []
            for _ in range(rng.randint(1, 2)):
                messages.append({"role": "user", "content": sentence(rng, rng.randint(8, 60))})
                think = f"<think>{sentence(rng, rng.randint(20, 120))}</think>" if rng.random() < 0.5 else ""
                messages.append({"role": "assistant", "content": think + sentence(rng, rng.randint(20, 150))})
            f.write(json.dumps({"id": f"t{i}", "model": rng.choice(["model-a", "model-b"]),
                                "messages": messages}) + "\n")


def run_benchmark(transcripts: int, concurrency: int, executor: str = "local",
                  keep: bool = False, rater: str = "zipf",
                  embedder: str | None = None) -> tuple[float, float, dict[str, Any]]:
    """One whole run in a subprocess: (wall seconds, peak RSS in MiB, the run's manifest)."""
    tmp = Path(tempfile.mkdtemp(prefix="featdisco-bench-pipeline-"))
    data = tmp / "transcripts.jsonl"
    generate(data, transcripts)
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                               "--handler", f"tests.pipeline_fakes:{rater}_handler"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    run_dir = tmp / "run"
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "featdisco", "run", str(data), "--run-dir", str(run_dir), "--llm", "openai",
             "--model", "fake-rater", "--base-url", f"http://127.0.0.1:{port}/v1",
             "--concurrency", str(concurrency), "--executor", executor, "-q",
             *(["--embedder", embedder] if embedder else [])], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"featdisco run failed:\n{proc.stderr.read() if proc.stderr else ''}")
    finally:
        server.terminate()
        server.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)
    # Each stage resets the kernel's peak-RSS mark (run.reset_peak_rss) to record its own
    # peak, which also resets ru_maxrss: the run's peak is the largest stage peak.
    stage_peaks = [rec.get("peak_rss_mib") or 0.0 for rec in manifest["stages"].values()]
    return wall, max([usage.ru_maxrss / 1024, *stage_peaks]), manifest


def print_stages(manifest: dict[str, Any]) -> float:
    total = 0.0
    for name, rec in manifest["stages"].items():
        total += rec["seconds"]
        counts = {k: v for k, v in rec["counts"].items() if not isinstance(v, dict)}
        peak = rec.get("peak_rss_mib") or 0
        print(f"  {name:<10} {rec['seconds']:8.1f} s  peak {peak:7.0f} MiB   {counts}")
    return total


RATER_HELP = ("zipf: features from a 6,000-phrase vocabulary, which leaves embed and cluster "
              "little to do; unique: about half the features distinct, as a frontier rater gives")


def benchmark_args(description: str, transcripts: int, rater: str,
                   embedder: bool = False) -> argparse.Namespace:
    """The options bench/pipeline.py and bench/scale.py share; only their defaults differ
    (``embedder``: also take ``--embedder``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--transcripts", type=int, default=transcripts)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--executor", choices=("local", "ray"), default="local")
    ap.add_argument("--rater", choices=("zipf", "unique"), default=rater,
                    help=f"{RATER_HELP} (default: {rater})")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and run directory")
    if embedder:
        ap.add_argument("--embedder", default=None, help="the run's --embedder (default: the tool's default)")
    return ap.parse_args()


def main() -> None:
    args = benchmark_args(__doc__.splitlines()[0], 10_000, "zipf", embedder=True)
    wall, rss, manifest = run_benchmark(args.transcripts, args.concurrency, args.executor, args.keep,
                                        args.rater, args.embedder)
    print(f"{args.transcripts:,} transcripts, fake LLM at zero latency ({args.rater} rater), "
          f"concurrency {args.concurrency}, executor {args.executor}, "
          f"embedder {args.embedder or 'default'}")
    total = print_stages(manifest)
    embed_s = manifest["stages"].get("embed", {}).get("seconds", 0.0)
    print(f"embed stage {embed_s:.1f} s = {embed_s / total:.1%} of the stages' {total:.1f} s")
    print(f"total wall {wall:.1f} s (target ≤ 900 s), peak RSS {rss:.0f} MiB (target ≤ 4096 MiB)")


if __name__ == "__main__":
    main()
