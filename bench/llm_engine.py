"""Benchmark: the call engine against the fake server with 200 ms latency.

Prints, per concurrency level, the wall time against the ideal (calls x latency /
concurrency; the target is at most 1.15x) and the client's CPU time per call. The fake
runs in its own process(es) so that its CPU is not counted as the client's; the client
runs the whole real path: engine, cache (SQLite on disk), openai backend, HTTP.

Beside each engine line it prints a floor: the same calls from a bare client (no engine,
cache, validation or backend) on the HTTP client the engine's transport uses (h1.py's for
auto and h1, aiohttp's otherwise), against the same server in the same run. On a
small machine the client and the fake share the CPUs, so the ideal can be out of reach
for any Python client; the floor shows how much of the gap is the engine's. The fake's
own CPU per request is printed too, as is how many processes serve it (``--server-procs``:
with 2, two fakes share the port through SO_REUSEPORT and the kernel spreads the
connections between them; default 1).

    .venv/bin/python bench/llm_engine.py [--calls 20000] [--latency 0.2] [--conc 256 1000]
        [--server-procs 1] [--no-floor] [--transport auto|h1|aiohttp|httpx]
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

import orjson

from featdisco.llm.base import ChatMessage, LLMRequest, Sampling
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine, _relaxed_gc
from featdisco.llm.h1 import H1Poster
from featdisco.llm.openai import OpenAILLM

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["echo", "features"],
          "properties": {"echo": {"type": "string"},
                         "features": {"type": "array", "items": {"type": "string"}}}}


def start_server(latency: float, procs: int = 1) -> tuple[list[subprocess.Popen[str]], str]:
    """``procs`` fake servers on one port (SO_REUSEPORT when more than one)."""
    out: list[subprocess.Popen[str]] = []
    port = "0"
    for _ in range(procs):
        cmd = [sys.executable, "-m", "tests.fakes.openai_server", "--port", port,
               "--latency", str(latency)] + (["--reuse-port"] if procs > 1 else [])
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        out.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "READY":
            stop_server(out)
            raise RuntimeError("fake server did not start")
        port = line[1]
    return out, f"http://127.0.0.1:{port}/v1"


def stop_server(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


def server_cpu(procs: list[subprocess.Popen[str]]) -> float:
    """CPU seconds the fake's processes have used (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for proc in procs:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


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


TEXT = ("Summarise the behaviour shown in this piece of a transcript. " * 8).strip()
SYSTEM = "You describe transcript pieces."


async def one_run(base_url: str, calls: int, conc: int, tag: str, cache_dir: str,
                  transport: str = "auto", server: Callable[[], float] = lambda: 0.0
                  ) -> dict[str, float]:
    backend = OpenAILLM("gpt-4o-mini", base_url=base_url, api_key="sk-bench", concurrency=conc,
                        http_transport=transport)
    cache = CallCache(os.path.join(cache_dir, f"cache-{conc}.sqlite"))
    engine = CallEngine(backend, cache, concurrency=conc, progress="none", timeout=30)
    reqs = [LLMRequest((ChatMessage("system", SYSTEM),
                        ChatMessage("user", f"{tag} piece {i}: {TEXT}")), schema=SCHEMA,
                       sampling=Sampling(max_tokens=256), prompt_version="bench-v1")
            for i in range(calls)]
    # warm the pool and the code paths so connection set-up is not billed to the run
    await engine.run(reqs[:conc])
    rest = reqs[conc:]
    s0, c0, t0 = server(), cpu_seconds(), time.perf_counter()
    results = await engine.run(rest)
    wall, cpu, srv = time.perf_counter() - t0, cpu_seconds() - c0, server() - s0
    await engine.aclose()
    cache.close()
    bad = sum(r.status != "ok" for r in results)
    return {"calls": len(rest), "wall": wall, "cpu": cpu, "server": srv, "failed": bad}


async def floor_run(base_url: str, calls: int, conc: int, tag: str, client: str,
                    server: Callable[[], float] = lambda: 0.0) -> dict[str, float]:
    """The same requests from a bare client: ``conc`` tasks on one HTTP client (``client``:
    'h1', the engine's default lean client, or 'aiohttp'), the body built with orjson and
    the reply parsed, nothing else — under the same garbage collector setting as the
    engine's runs, so that the gap is the engine's own code."""
    url = base_url + "/chat/completions"
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA,
                                                  "strict": True}}
    auth = {"Authorization": "Bearer sk-bench"}
    bad = 0

    def body(i: int) -> bytes:
        return orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 256, "temperature": 0.0,
                             "messages": [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": f"{tag} piece {i}: {TEXT}"}],
                             "response_format": fmt})

    if client == "h1":
        poster = H1Poster(conc, 30.0, auth)

        async def post(i: int) -> tuple[int, bytes]:
            status, _, raw = await poster.post(url, body(i))
            return status, raw

        async def close() -> None:
            await poster.close()
    else:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))
        headers = {**auth, "Content-Type": "application/json"}

        async def post(i: int) -> tuple[int, bytes]:
            async with session.post(url, data=body(i), headers=headers) as r:
                return r.status, await r.read()

        async def close() -> None:
            await session.close()

    async def drain(todo: list[int]) -> None:
        nonlocal bad
        while todo:
            status, raw = await post(todo.pop())
            reply = orjson.loads(raw)
            bad += status != 200 or not reply["choices"][0]["message"]["content"]

    warm = list(range(calls, calls + conc))
    await asyncio.gather(*(drain(warm) for _ in range(conc)))
    todo = list(range(calls))
    s0, c0, t0 = server(), cpu_seconds(), time.perf_counter()
    with _relaxed_gc(conc):
        await asyncio.gather(*(drain(todo) for _ in range(conc)))
    wall, cpu, srv = time.perf_counter() - t0, cpu_seconds() - c0, server() - s0
    await close()
    return {"calls": calls, "wall": wall, "cpu": cpu, "server": srv, "failed": bad}


def report(label: str, r: dict[str, float], conc: int, latency: float) -> None:
    ideal = r["calls"] * latency / conc
    print(f"  {label:<13} {int(r['calls'])} calls in {r['wall']:.2f}s, ideal {ideal:.2f}s, "
          f"ratio {r['wall'] / ideal:.3f}; client CPU {r['cpu'] / r['calls'] * 1e6:.0f} us/call, "
          f"server CPU {r['server'] / r['calls'] * 1e6:.0f} us/call; failed {int(r['failed'])}",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--conc", type=int, nargs="+", default=[256, 1000])
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop for the client (auto: uvloop when installed)")
    p.add_argument("--server-procs", type=int, default=1,
                   help="fake server processes sharing the port with SO_REUSEPORT")
    p.add_argument("--no-floor", action="store_true", help="skip the bare-client floor")
    p.add_argument("--transport", choices=["auto", "h1", "aiohttp", "httpx"], default="auto",
                   help="the openai backend's http_transport (httpx: the SDK's own path)")
    args = p.parse_args()
    factory = loop_factory(args.loop)
    # the floor uses the HTTP client the engine's lean path uses (httpx: aiohttp's, the
    # cheapest client the SDK path could hope for)
    client = "h1" if args.transport in ("auto", "h1") else "aiohttp"
    print(f"client event loop: {'uvloop' if factory else 'asyncio'}; transport "
          f"{args.transport}; fake server: {args.server_procs} process(es)"
          f"{' on one port via SO_REUSEPORT' if args.server_procs > 1 else ''}; "
          f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    procs, url = start_server(args.latency, args.server_procs)

    def server() -> float:
        return server_cpu(procs)

    try:
        with tempfile.TemporaryDirectory() as d:
            for conc in args.conc:
                print(f"concurrency {conc} (target: engine ratio <= 1.15)", flush=True)
                with asyncio.Runner(loop_factory=factory) as runner:
                    r = runner.run(one_run(url, args.calls + conc, conc, f"c{conc}", d,
                                           args.transport, server))
                report("engine", r, conc, args.latency)
                if not args.no_floor:
                    with asyncio.Runner(loop_factory=factory) as runner:
                        r = runner.run(floor_run(url, args.calls, conc, f"f{conc}", client,
                                                 server))
                    report(f"floor {client}", r, conc, args.latency)
    finally:
        stop_server(procs)


if __name__ == "__main__":
    main()
