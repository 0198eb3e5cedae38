"""Does the run's accounting lose an interrupted invocation? (issue 21 item 6)

Runs ``featdisco run`` against the fake OpenAI server on 127.0.0.1, stops it mid-featurize
with Ctrl-C (SIGINT) and with kill -9, reads ``featdisco status RUN --json``, then resumes
it to the end and reads it again. After each, ``llm_totals.sent`` should equal the calls the
server answered, short by at most the calls in flight at the stop (``--concurrency``):
those reached the server but their replies never reached the run (the rerun sends them
again, and counts them then).

    python bench/accounting.py --chats 300 --concurrency 16 --latency 0.05

``--ledger-cpu N`` measures instead what the ledger adds to storing a call: N calls put into
a cache on disk in loop ticks of 64 (as the engine finishes them), with and without an open
invocation; CPU microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import reasoning_chats, write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import pipeline_handler

SNAPSHOT = "gpt-4o-mini-2024-07-18"


def handler(req: FakeRequest) -> Reply:
    return dataclasses.replace(pipeline_handler(req), model=SNAPSHOT)


def status(run_dir: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "featdisco", "status", str(run_dir), "--json"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def scenario(name: str, sig: int, inputs: Path, root: Path, server: FakeOpenAIServer,
             args: argparse.Namespace, env: dict[str, str]) -> dict[str, object]:
    server.reset()
    run_dir = root / name
    cmd = [sys.executable, "-m", "featdisco", "run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai",
           "--model", "gpt-4o-mini", "--base-url", server.base_url, "--clusters", "3",
           "--concurrency", str(args.concurrency), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and server.total < args.stop_after:
        time.sleep(0.005)
    if proc.poll() is not None:
        raise SystemExit(f"{name}: the run ended before it was stopped: {proc.communicate()[1][-500:]}")
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    time.sleep(0.3)  # requests already on the wire reach the counter
    answered = server.total
    stopped = status(run_dir, env)
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if resumed.returncode != 0:
        raise SystemExit(f"{name}: the resumed run failed: {resumed.stderr[-800:]}")
    final = status(run_dir, env)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {"stop": name, "exit": proc.returncode, "answered_at_stop": answered,
            "sent_at_stop": stopped["llm_totals"]["sent"],
            "featurize_state_at_stop": {s["stage"]: s["state"] for s in stopped["stages"]}.get("featurize"),
            "answered_total": server.total, "sent_total": final["llm_totals"]["sent"],
            "manifest_sent_total": manifest["llm_totals"]["sent"],
            "invocations": final["llm_totals"]["invocations"], "models": final["llm_models"],
            "in_flight_bound": args.concurrency}


async def put_calls(n: int, ledger: bool, folder: str, tick: int = 64) -> float:
    from featdisco.llm.base import Usage
    from featdisco.llm.cache import CallCache

    cache = CallCache(Path(folder) / f"cache-{ledger}.sqlite")
    if ledger:
        cache.begin_invocation("run", "invocation")
        cache.scope = "featurize"
    data = {"features": [f"Feature {i} about the text" for i in range(10)]}
    extra = {"cost": 0.0001, "replied_model": SNAPSHOT} if ledger else {}
    t0 = time.process_time()
    for i in range(n):
        cache.put_ok(f"{i:064d}", "openai", "gpt-4o-mini", "featurize.v2", "{}", data, Usage(300, 120), 1,
                     **extra)  # type: ignore[arg-type]
        if i % tick == tick - 1:
            await asyncio.sleep(0)  # the end of a loop tick: its calls are committed together
    cache.close()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chats", type=int, default=300, help="transcripts (3 pieces each: user, thought, answer)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency", type=float, default=0.05, help="seconds per reply at the fake server")
    p.add_argument("--stop-after", type=int, default=None, help="stop once the server has this many "
                   "requests (default: a third of the featurize calls)")
    p.add_argument("--ledger-cpu", type=int, default=0, metavar="N",
                   help="measure the ledger's CPU per stored call over N calls, and nothing else")
    args = p.parse_args()
    if args.ledger_cpu:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(3):
                plain = asyncio.run(put_calls(args.ledger_cpu, False, tmp))
                both = asyncio.run(put_calls(args.ledger_cpu, True, tmp))
                print(json.dumps({"us_per_call_without_ledger": round(plain, 2),
                                  "us_per_call_with_ledger": round(both, 2)}))
        return
    args.stop_after = args.stop_after or args.chats  # 3 pieces a chat: a third of featurize
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(handler, latency=args.latency) as server:
        root = Path(tmp)
        write_jsonl(root / "in" / "chats.jsonl", reasoning_chats(
            args.chats, user=lambda i: f"Question {i} about topic {i * 7}",
            thought=lambda i: f"Let me think about topic {i * 7}, step {i}.", answer=lambda i: f"Answer {i}."))
        for name, sig in (("ctrl-c", signal.SIGINT), ("kill-9", signal.SIGKILL)):
            row = scenario(name, sig, root / "in", root, server, args, env)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
