"""Benchmark `featdisco split` on a generated JSONL (default 1 GB) and a JSON array (default
200 MB): records/s and peak RSS of each.

Baseline in the same run: a bare loop that reads the same JSONL line by line and parses each
line with orjson, the floor any JSONL reader pays. Prints both and their ratio. The array is
the container that used to be read whole (about 1.5 GB peak for 200 MB); streamed, its
peak should match the JSONL's (goal: both under 400 MB).

    python bench/split.py [--size-mb 1024] [--array-mb 200] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

WORDS = ["the", "model", "reasons", "about", "budget", "tokens", "roleplay", "user", "asks", "python", "code", "error", "fix", "explain", "carefully", "step", "answer", "because", "however", "therefore", "wait", "maybe", "check", "again"]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(path: Path, size_bytes: int, seed: int = 0, *, array: bool = False) -> int:
    """JSON Lines, or with ``array`` one JSON array of the same records."""
    rng = random.Random(seed)
    written = records = 0
    with path.open("wb") as f:
        if array:
            f.write(b"[\n")
        while written < size_bytes:
            turns = []
            for _ in range(rng.randint(1, 3)):
                turns.append({"role": "user", "content": sentence(rng, rng.randint(10, 120))})
                turns.append({"role": "assistant",
                              "content": f"<think>{sentence(rng, rng.randint(20, 300))}</think>"
                                         f"{sentence(rng, rng.randint(20, 200))}"})
            rec = {"id": f"r{records}", "model": rng.choice(["model-a", "model-b"]),
                   "dataset": "synthetic", "messages": turns}
            line = (b",\n" if array and records else b"") + orjson.dumps(rec) + (b"" if array else b"\n")
            f.write(line)
            written += len(line)
            records += 1
        if array:
            f.write(b"\n]\n")
    return records


BASELINE = """
import sys, time, orjson, resource
t = time.perf_counter(); n = 0
with open(sys.argv[1], 'rb') as f:
    for line in f:
        orjson.loads(line); n += 1
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_child(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds and the child's peak RSS in KiB (its own, measured by wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read() if proc.stderr else ""
        sys.exit(f"command failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--array-mb", type=int, default=200, help="size of the JSON array (0: skip)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="featdisco-bench-"))
    data = tmp / "big.jsonl"
    t = time.perf_counter()
    records = generate(data, args.size_mb * 1024 * 1024)
    size = data.stat().st_size
    print(f"generated {records:,} records, {size / 1e9:.2f} GB in {time.perf_counter() - t:.0f}s")

    base_wall, base_rss, _ = run_child([sys.executable, "-c", BASELINE, str(data)])
    out = tmp / "pieces.parquet"
    wall, rss, _ = run_child([sys.executable, "-m", "featdisco", "split", str(data), "-o", str(out), "-q"])
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    print(f"baseline (orjson per line): {records / base_wall:,.0f} records/s, {size / base_wall / 1e6:.0f} MB/s,"
          f" peak RSS {base_rss / 1024:.0f} MiB")
    print(f"featdisco split:            {records / wall:,.0f} records/s, {size / wall / 1e6:.0f} MB/s,"
          f" peak RSS {rss / 1024:.0f} MiB, {rows:,} pieces in {wall:.0f}s")
    print(f"split speed / baseline: {base_wall / wall:.2f}x; peak RSS / input size: {rss * 1024 / size:.3f}")
    made = [data, out]
    if args.array_mb:
        arr = tmp / "big.json"
        n = generate(arr, args.array_mb * 1024 * 1024, seed=1, array=True)
        asize = arr.stat().st_size
        aout = tmp / "array-pieces.parquet"
        awall, arss, _ = run_child([sys.executable, "-m", "featdisco", "split", str(arr), "-o", str(aout), "-q"])
        arows = pq.ParquetFile(aout).metadata.num_rows
        print(f"featdisco split, JSON array of {asize / 1e6:.0f} MB: {n / awall:,.0f} records/s, "
              f"{asize / awall / 1e6:.0f} MB/s, peak RSS {arss / 1024:.0f} MiB, {arows:,} pieces in {awall:.0f}s")
        made += [arr, aout]
    if not args.keep:
        for p in made:
            p.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    main()
