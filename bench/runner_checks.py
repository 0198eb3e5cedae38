"""The runner's done-when checks on real commands (a fake LLM server on 127.0.0.1): a rerun
without inputs honours --max-chars, scan beside a writer stops naming its pid, compare goes
stale after a cluster change and current after the command status names.

    python bench/runner_checks.py /tmp/runner-checks
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.analysis.test_cli import small_run
from tests.conftest import reasoning_chats, write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import pipeline_handler

ENV = {**os.environ, "OPENAI_API_KEY": "sk-test"}


def fd(*args: object) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "featdisco", *map(str, args)], capture_output=True, text=True, env=ENV)
    print(f"$ featdisco {' '.join(map(str, args))}\n  exit {p.returncode}; stderr: {p.stderr.strip()[-300:]!r}")
    return p


def config(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "manifest.json").read_text())["config"])


def max_chars(root: Path) -> None:
    print("== 1. rerun without inputs with --max-chars 60")
    inputs = write_jsonl(root / "in.jsonl", reasoning_chats(
        12, user=lambda i: f"Question {i}: " + "why is the sky blue and not green? " * 6,
        thought=lambda i: "Let me think about the colour of the sky. " * (2 + i),
        answer=lambda i: f"Answer {i}: " + "because of scattering. " * 5))
    with FakeOpenAIServer(pipeline_handler) as srv:
        run = root / "run"
        fd("run", inputs, "--run-dir", run, "--llm", "openai", "--model", "fake-rater", "--base-url", srv.base_url,
           "--clusters", "3", "-q")
        longest = max(len(t) for t in pq.read_table(run / "pieces.parquet").column("text").to_pylist())
        print(f"  longest piece before: {longest} chars; calls so far {srv.total}")
        fd("run", "--run-dir", run, "--max-chars", "60", "-q")
        t = pq.read_table(run / "pieces.parquet")
        heads = [x.split("\n[… truncated")[0] for x in t.column("text").to_pylist()]
        print(f"  after --max-chars 60: longest kept text {max(map(len, heads))} chars, "
              f"{sum(t.column('truncated').to_pylist())} of {t.num_rows} pieces cut; manifest max_chars="
              f"{config(run)['max_chars']}; model kept from the run: {config(run)['model']}")
        before = srv.total
        fd("run", "--run-dir", run, "-q")
        print(f"  rerun without flags: {srv.total - before} calls; max_chars still {config(run)['max_chars']}")


def scan_beside_a_writer(small: Path) -> None:
    print("== 2. scan beside a writer")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from featdisco.rundir import RunLock; RunLock(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(small)],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout is not None
    holder.stdout.readline()
    t0 = time.perf_counter()
    fd("scan", small, "--question", "Is it polite?", "--llm", "openai", "--model", "m",
       "--base-url", "http://127.0.0.1:9/v1")
    print(f"  holder pid {holder.pid}; scan returned after {time.perf_counter() - t0:.1f}s (interpreter start included)")
    holder.kill()
    holder.wait()


def analyses(small: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(fd("status", small, "--json").stdout)
    for a in doc["analyses"]:
        print(f"  {a['name']}: current={a['current']} command={a['command']!r}")
    return {a["name"]: a for a in doc["analyses"]}


def stale_then_current(small: Path) -> None:
    print("== 3. compare goes stale after a cluster change, current after its command")
    fd("compare", small, "--by", "model")
    fd("compare", small, "--by", "model", "--unit", "transcript")
    analyses(small)
    a = pq.read_table(small / "assignments.parquet")
    cids = a.column("cluster_id").to_pylist()
    cids[0] = 1 if cids[0] != 1 else 0
    col = a.schema.get_field_index("cluster_id")
    pq.write_table(a.set_column(col, "cluster_id", pa.array(cids, a.schema.field(col).type)),
                   small / "assignments.parquet")
    print("  (moved one feature to another cluster, as an edit does)")
    found = analyses(small)
    fd(*shlex.split(str(found["compare_model"]["command"]))[1:])
    analyses(small)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", type=Path, default=Path("/tmp/runner-checks"),
                    help="a folder for the runs (made if missing)")
    root = ap.parse_args().root
    root.mkdir(parents=True, exist_ok=True)
    max_chars(root)
    small = small_run(root / "small")
    scan_beside_a_writer(small)
    stale_then_current(small)


if __name__ == "__main__":
    main()
