"""Benchmark: the call engine against the fake server with 200 ms latency.

Prints, per concurrency level, the wall time against the ideal (calls x latency /
concurrency; the target is at most 1.15x) and the client's CPU time per call. The fake
runs in its own process so that its CPU is not counted as the client's; the client runs
the whole real path: engine, cache (SQLite on disk), openai SDK, HTTP.

    .venv/bin/python bench/llm_engine.py [--calls 20000] [--latency 0.2] [--conc 256 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from featdisco.llm.base import ChatMessage, LLMRequest, Sampling
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine
from featdisco.llm.openai import OpenAILLM

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["echo", "features"],
          "properties": {"echo": {"type": "string"},
                         "features": {"type": "array", "items": {"type": "string"}}}}


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                             "--latency", str(latency)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        proc.kill()
        raise RuntimeError("fake server did not start")
    return proc, f"http://127.0.0.1:{line[1]}/v1"


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one_run(base_url: str, calls: int, conc: int, tag: str, cache_dir: str) -> dict[str, float]:
    backend = OpenAILLM("gpt-4o-mini", base_url=base_url, api_key="sk-bench", concurrency=conc)
    cache = CallCache(os.path.join(cache_dir, f"cache-{conc}.sqlite"))
    engine = CallEngine(backend, cache, concurrency=conc, progress="none", timeout=30)
    text = ("Summarise the behaviour shown in this piece of a transcript. " * 8).strip()
    reqs = [LLMRequest((ChatMessage("system", "You describe transcript pieces."),
                        ChatMessage("user", f"{tag} piece {i}: {text}")), schema=SCHEMA,
                       sampling=Sampling(max_tokens=256), prompt_version="bench-v1")
            for i in range(calls)]
    # warm the pool and the code paths so connection set-up is not billed to the run
    await engine.run(reqs[:conc])
    rest = reqs[conc:]
    c0, t0 = cpu_seconds(), time.perf_counter()
    results = await engine.run(rest)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    await engine.aclose()
    cache.close()
    bad = sum(r.status != "ok" for r in results)
    return {"calls": len(rest), "wall": wall, "cpu": cpu, "failed": bad}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--conc", type=int, nargs="+", default=[256, 1000])
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop for the client (auto: uvloop when installed)")
    args = p.parse_args()
    factory = loop_factory(args.loop)
    print(f"client event loop: {'uvloop' if factory else 'asyncio'}; "
          f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as d:
            for conc in args.conc:
                with asyncio.Runner(loop_factory=factory) as runner:
                    r = runner.run(one_run(url, args.calls + conc, conc, f"c{conc}", d))
                ideal = r["calls"] * args.latency / conc
                print(f"concurrency {conc:>5}: {int(r['calls'])} calls in {r['wall']:.2f}s, "
                      f"ideal {ideal:.2f}s, ratio {r['wall'] / ideal:.3f} (target <= 1.15); "
                      f"client CPU {r['cpu'] / r['calls'] * 1e6:.0f} us/call; "
                      f"failed {int(r['failed'])}", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
