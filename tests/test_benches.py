"""Every bench runs as its docstring, the README and the Makefile show it, `python
bench/NAME.py` from the repository root: `make bench` and `python bench/llm_engine.py`
stopped with "No module named 'tests'", and bench/featurize_memory.py called a Pipeline
method that no longer exists. Each bench is run at its smallest size, in a subprocess, with
the repository root kept off the import path (as a user's shell has it)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (REPO / "bench").glob("*.py"))

# The smallest size of each bench that still runs its whole path (seconds on two busy cores).
SMALLEST: dict[str, list[str]] = {
    "llm_engine.py": ["--calls", "40", "--conc", "8", "--limit", "1000", "--median", "0.01", "--p99", "0.05",
                      "--mode", "rpm"],  # ~2 s
    "split.py": ["--size-mb", "1", "--array-mb", "1"],  # ~3 s
    "probe.py": ["--samples", "400", "--targets", "5", "--users", "50", "--jobs", "1"],  # ~4 s
    "embed.py": ["--distinct", "40", "--occurrences", "200", "--reps", "1"],  # ~5 s
    "cluster.py": ["--n", "1000", "--k", "8", "--blobs", "10", "--iters", "2", "--threads", "1"],
    "pipeline.py": ["--transcripts", "10", "--concurrency", "8"],
    "scale.py": ["--transcripts", "10"],
    "featurize_memory.py": ["--transcripts", "10"],
    "map_layout.py": ["--n", "1000", "--distinct", "300", "--blobs", "10", "--dim", "16", "--caps", "100"],
    "report.py": ["--pieces", "300", "--clusters", "6"],
    "quality.py": ["--transcripts", "20"],
    "local_llm.py": ["--pieces", "1", "--chars", "200"],
    "accounting.py": ["--chats", "20", "--concurrency", "4", "--latency", "0.01"],
    "cluster_ids.py": ["--transcripts", "30", "--more", "10"],
    "runner_checks.py": [],  # its checks are fixed-size (a 12-chat run)
    "xstest.py": ["--per-model", "1", "--question", "Does the response refuse the request?"],  # local LLM
    "xstest_logits.py": ["runs/bench-xstest", "1", "Does the response refuse the request?", "--limit", "2"],  # after xstest
}
LOCAL_LLM = {"local_llm.py", "xstest.py", "xstest_logits.py"}  # need llama-cpp-python (make install-local)
FAST = {"llm_engine.py", "split.py", "probe.py", "embed.py"}  # together under ~15 s: in the default suite


def run_bench(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python bench/NAME.py ARGS`` from the repository root; the package itself from src/
    (as the venv's editable install gives it), but not the repository root."""
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and Path(p).resolve() != REPO]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *path])}
    return subprocess.run([sys.executable, f"bench/{name}", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_every_bench_has_a_smallest_size_and_a_documented_command() -> None:
    assert sorted(SMALLEST) == BENCHES  # a new bench needs its smallest size here
    for name in BENCHES:
        doc = (REPO / "bench" / name).read_text().split('"""')[1]
        assert re.search(rf"python bench/{re.escape(name)}\b", doc), f"{name}: its docstring shows no command"


@pytest.mark.parametrize("name", BENCHES)
def test_bench_imports_and_answers_help(name: str) -> None:
    proc = run_bench(name, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in BENCHES])
def test_bench_runs_at_its_smallest_size(name: str) -> None:
    if name in LOCAL_LLM and importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("the local LLM bench needs llama-cpp-python (make install-local)")
    proc = run_bench(name, *SMALLEST[name])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "the bench printed no result"
