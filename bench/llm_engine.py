"""Benchmark: the call engine at a provider's real ceiling.

The fake server (its own process, so its CPU is not counted as the client's) is shaped
like a top-tier provider: latency lognormal with median 2 s and p99 15 s, and a limit of
500 requests/s (30,000 a minute) answered with 429 + Retry-After beyond it. The client
runs the whole real path (engine, SQLite cache on disk, openai backend, aiohttp): 20,000
calls at concurrency 2,000, once with ``--rpm`` at the limit (the engine paces itself)
and once without (it meets the limit as 429s and waits out each Retry-After).

Printed per run, with the goals of issue 12:

* throughput against the ideal rate, min(limit, concurrency / mean latency) (goal >= 0.95):
  as the server saw it (the rate at which it admitted the first 95% of the calls: how
  well the client keeps the limit busy) and end to end (calls / wall time, which includes
  draining the latency tail after the last admission, also given against an ideal client
  that admits exactly at the ideal rate and meets the same latency draws);
* client CPU per call (goal <= 400 us), 429s received, calls lost (goal 0).

``--send sdk`` measures the send path featdisco does not take, for comparison: every call
through the official SDK on its aiohttp transport (``openai.DefaultAioHttpClient``, retries
off, pool sized to the concurrency), by its cheapest public route (``client.post`` to the
endpoint, the raw response read and parsed as the backend parses it). ``--calls 4000`` is
the quick size (a minute a mode); the figures in the README are the default size.

    .venv/bin/python bench/llm_engine.py [--calls 20000] [--conc 2000] [--limit 500]
        [--median 2] [--p99 15] [--mode both|rpm|none] [--send aiohttp|sdk]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2  # the SDK's HTTP library (for --send sdk)
import openai
import orjson

REPO = Path(__file__).resolve().parents[1]
# run as `python bench/llm_engine.py`, so the repository (its fake server in tests/) is not on
# the path by itself: it stopped with "No module named 'tests'"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.fakes.openai_server import lognormal_latency  # noqa: E402

from featdisco.llm.base import (  # noqa: E402
    ChatMessage,
    LLMRequest,
    LLMResponse,
    PerLoop,
    Sampling,
    sdk_error,
)
from featdisco.llm.cache import CallCache  # noqa: E402
from featdisco.llm.engine import CallEngine  # noqa: E402
from featdisco.llm.openai import OpenAILLM, read_completion  # noqa: E402

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["echo", "features"],
          "properties": {"echo": {"type": "string"},
                         "features": {"type": "array", "items": {"type": "string"}}}}
TEXT = ("Summarise the behaviour shown in this piece of a transcript. " * 8).strip()
SYSTEM = "You describe transcript pieces."
SEED = 7
WARM_UP = 20  # calls before the measured run (they take the first latency draws)


def start_server(median: float, p99: float, limit: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--latency",
           str(median), "--latency-p99", str(p99), "--limit-rps", str(limit), "--seed", str(SEED)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        proc.terminate()
        raise RuntimeError("fake server did not start")
    return proc, f"http://127.0.0.1:{line[1]}"


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process (the client)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def ideal_wall(calls: int, rate: float, conc: int, median: float, p99: float) -> float:
    """The wall time of a perfect client: it admits a call every 1/rate seconds, never more
    than ``conc`` at once, and meets the server's own latency draws (same seed, same order)."""
    draw = lognormal_latency(median, p99, SEED)
    for _ in range(WARM_UP):  # the server's first draws went to the warm-up calls
        draw()
    running: list[float] = []
    end = 0.0
    for i in range(calls):
        start = i / rate
        if len(running) >= conc:
            start = max(start, heapq.heappop(running))
        finish = start + draw()
        heapq.heappush(running, finish)
        end = max(end, finish)
    return end


class SDKSendLLM(OpenAILLM):
    """The openai backend with each call sent by the official SDK on its aiohttp transport
    (``--send sdk``): what one SDK send path would cost, for comparison."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._clients: PerLoop[openai.AsyncOpenAI] = PerLoop(self._client)

    def _client(self) -> openai.AsyncOpenAI:
        limits = httpx2.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return openai.AsyncOpenAI(api_key=self.api_key, base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout,
                                  http_client=openai.DefaultAioHttpClient(limits=limits))

    async def complete(self, request: LLMRequest) -> LLMResponse:
        client = self._clients.get()
        try:
            r = await client.post("/chat/completions", body=self.request_params(request),
                                  cast_to=httpx2.Response, stream=True)
        except openai.APIError as e:
            raise sdk_error(openai, e, (self.api_key,)) from e
        body = bytearray()
        async for chunk in r.aiter_bytes():
            body += chunk
        await r.aclose()
        return read_completion(orjson.loads(body))

    async def aclose(self) -> None:
        await self._clients.aclose()
        await super().aclose()


def one_run(root: str, calls: int, conc: int, rpm: float | None, cache_dir: str,
            send: str = "aiohttp") -> dict[str, float]:
    backend = (SDKSendLLM if send == "sdk" else OpenAILLM)(
        "gpt-4o-mini", base_url=root + "/v1", api_key="sk-bench", concurrency=conc)
    cache = CallCache(os.path.join(cache_dir, f"cache-{rpm}.sqlite"))
    engine = CallEngine(backend, cache, concurrency=conc, rpm=rpm, progress="none")
    reqs = [LLMRequest((ChatMessage("system", SYSTEM),
                        ChatMessage("user", f"{rpm} piece {i}: {TEXT}")), schema=SCHEMA,
                       sampling=Sampling(max_tokens=256), prompt_version="bench-v1")
            for i in range(calls)]
    # a few calls first, so that one-time imports and set-up are not billed per call (the
    # connections are: opening 2,000 of them is part of every real run's cost)
    engine.run_sync([LLMRequest((ChatMessage("user", f"warm-up {i}"),), schema=SCHEMA,
                                prompt_version="bench-v1") for i in range(WARM_UP)])
    c0, t0 = cpu_seconds(), time.perf_counter()
    results = engine.run_sync(reqs)
    wall, c1 = time.perf_counter() - t0, cpu_seconds()
    engine.close()
    cache.close()
    with urllib.request.urlopen(root + "/_stats") as r:
        stats = json.loads(r.read())
    s = engine.last_summary
    admits = stats["admit_times"]
    admits = admits[WARM_UP:]
    k = int(0.95 * calls)  # the first 95%: the tail's timed-out retries come much later
    return {"calls": calls, "wall": wall, "user": c1[0] - c0[0], "sys": c1[1] - c0[1],
            "lost": sum(r.status != "ok" for r in results),
            "got_429": s.retried_by_reason.get("rate-limit", 0)
            + s.failed_by_reason.get("rate-limit", 0),
            "retried": sum(s.retried_by_reason.values()),
            "admitted": stats["admitted"],
            "sustained": k / (admits[k] - admits[0]) if len(admits) > k else 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--conc", type=int, default=2_000)
    p.add_argument("--limit", type=float, default=500.0, help="the server's requests/s")
    p.add_argument("--median", type=float, default=2.0, help="median latency, seconds")
    p.add_argument("--p99", type=float, default=15.0, help="99th percentile latency, seconds")
    p.add_argument("--mode", choices=["both", "rpm", "none"], default="both",
                   help="--rpm at the limit, no --rpm, or both runs")
    p.add_argument("--send", choices=["aiohttp", "sdk"], default="aiohttp",
                   help="the backend's send path (aiohttp), or the official SDK's, to compare")
    args = p.parse_args()
    sigma = math.log(args.p99 / args.median) / 2.3263478740408408
    mean = args.median * math.exp(sigma * sigma / 2)
    rate = min(args.limit, args.conc / mean)
    ideal = ideal_wall(args.calls, rate, args.conc, args.median, args.p99)
    print(f"{args.calls:,} calls at concurrency {args.conc:,}; latency median {args.median:g}s, "
          f"p99 {args.p99:g}s (mean {mean:.2f}s); server limit {args.limit:g}/s; ideal rate "
          f"min({args.limit:g}, {args.conc}/{mean:.2f}s) = {rate:.0f}/s; an ideal client "
          f"finishes in {ideal:.1f}s; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; sent by {args.send}", flush=True)
    modes = {"both": [True, False], "rpm": [True], "none": [False]}[args.mode]
    with tempfile.TemporaryDirectory() as d:
        for with_rpm in modes:
            proc, root = start_server(args.median, args.p99, args.limit)
            try:
                r = one_run(root, args.calls, args.conc, args.limit * 60 if with_rpm else None, d,
                            args.send)
            finally:
                proc.terminate()
                proc.wait(10)
            sustained = r["sustained"]
            cpu = r["user"] + r["sys"]
            print(f"{'--rpm ' + str(int(args.limit * 60)) if with_rpm else 'no --rpm':<11}: "
                  f"server admitted {sustained:.0f}/s = {sustained / rate:.3f} of ideal; "
                  f"end to end {r['calls'] / r['wall']:.0f}/s in {r['wall']:.1f}s = "
                  f"{ideal / r['wall']:.3f} of the ideal client; client CPU "
                  f"{cpu / r['calls'] * 1e6:.0f} us/call ({r['user'] / r['calls'] * 1e6:.0f} "
                  f"user, {r['sys'] / r['calls'] * 1e6:.0f} system); 429s received "
                  f"{int(r['got_429']):,}; retries {int(r['retried']):,}; calls lost "
                  f"{int(r['lost'])}", flush=True)


if __name__ == "__main__":
    main()
