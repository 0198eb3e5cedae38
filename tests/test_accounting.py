"""Issue 21 item 6: accounting that loses nothing. Usage is written to the run's ledger as
each call completes, so an invocation stopped by Ctrl-C or kill -9 is counted; a run-level
budget holds over every invocation and every command; a "not sent" note clears once a rerun
sends the calls; the model each reply names is recorded and shown."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featdisco.cli import app, main
from tests.conftest import interactive_sigint
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import (
    fake_api_key,  # noqa: F401  (fixtures: api_key, server)
    pipeline_handler,
)
from tests.test_pipeline import K, inputs  # noqa: F401  (fixtures)

SNAPSHOT = "gpt-4o-mini-2024-07-18"  # what the provider says answered a call to gpt-4o-mini
CONCURRENCY = 2


def snapshot_handler(req: FakeRequest) -> Reply:
    """The pipeline's fake rater, naming a dated snapshot as providers do for an alias."""
    return dataclasses.replace(pipeline_handler(req), model=SNAPSHOT)


@pytest.fixture(scope="module")
def snap_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(snapshot_handler) as srv:
        yield srv


def run_args(server: FakeOpenAIServer, inputs: Path, run_dir: Path) -> list[str]:  # noqa: F811
    return ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai", "--model", "gpt-4o-mini",
            "--base-url", server.base_url, "--clusters", str(K), "--concurrency", str(CONCURRENCY)]


def status_json(run_dir: Path) -> dict:
    result = CliRunner().invoke(app, ["status", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The command as a user runs it (``featdisco.cli.main``): its exit status and output."""
    monkeypatch.setattr(sys, "argv", ["featdisco", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return int(stop.value.code or 0), out.out + out.err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_invocation_is_counted(inputs: Path, tmp_path: Path, sig: int) -> None:  # noqa: F811
    """Stopped mid-featurize and resumed: the totals count every call the server answered,
    the stopped invocation's included, up to the calls in flight when it stopped."""
    slow = FakeOpenAIServer(snapshot_handler, latency=0.05).start()
    try:
        run_dir = tmp_path / "run"
        env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
        cmd = [sys.executable, "-m", "featdisco", *run_args(slow, inputs, run_dir), "-q"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=interactive_sigint)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and slow.total < 6:  # early: featurize has far more
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()}"
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        time.sleep(0.2)  # requests already on the wire land in the counter
        answered = slow.total
        stopped = status_json(run_dir)
        sent = stopped["llm_totals"]["sent"]
        assert answered - CONCURRENCY <= sent <= answered, (sent, answered)
        assert {s["stage"]: s["state"] for s in stopped["stages"]}["featurize"] == "incomplete"
        assert stopped["llm_models"] == {SNAPSHOT: sent}

        resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        doc = status_json(run_dir)
        total = doc["llm_totals"]
        assert total["invocations"] == 2
        # Each call is counted once it is answered; only those in flight when the first
        # invocation stopped reached the server without being counted (they were sent again).
        assert slow.total - CONCURRENCY <= total["sent"] <= slow.total, (total["sent"], slow.total)
        assert total["sent"] == sent + doc["llm_last"]["sent"]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["llm_totals"]["sent"] == total["sent"]  # the manifest agrees with the ledger
        assert sum(s["llm"]["sent"] for s in doc["stages"] if s["llm"]) == total["sent"]
    finally:
        slow.stop()


def test_the_budget_holds_over_every_invocation_and_command(
        snap_server: FakeOpenAIServer, inputs: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    args = run_args(snap_server, inputs, run_dir)
    code, _ = cli([*args, "--max-cost", "0.003"], monkeypatch, capsys)
    assert code == 3
    first = status_json(run_dir)["llm_totals"]["cost_usd"]
    assert 0 < first <= 0.003

    # A budget over both invocations: the second may spend only what the first left.
    budget = 0.006
    before = snap_server.total
    code, out = cli([*args, "--budget", str(budget)], monkeypatch, capsys)
    assert code == 3, out
    assert "stopped at the run's budget" in out and "of $0.00 spent" not in out
    doc = status_json(run_dir)
    spent = doc["llm_totals"]["cost_usd"]
    assert first < spent <= budget  # the second invocation spent what was left, and no more
    assert doc["llm_last"]["cost_usd"] == pytest.approx(spent - first)
    assert f"${spent:.4f} of ${budget:g} spent" in out
    assert doc["budget"]["usd"] == budget and doc["budget"]["spent_usd"] == spent
    assert snap_server.total > before

    # The budget is kept: a later command without --budget, and an analysis, keep to it.
    before = snap_server.total
    code, out = cli(args, monkeypatch, capsys)
    assert code == 3 and "stopped at the run's budget" in out, out
    code, out = cli(["scan", str(run_dir), "--question", "Does it apologise?"], monkeypatch, capsys)
    assert code == 3 and "stopped at the run's budget" in out, out
    # a call whose estimate still fits what is left may go; nothing that would pass the budget
    spent = status_json(run_dir)["llm_totals"]["cost_usd"]
    assert spent <= budget and snap_server.total <= before + 2
    text = CliRunner().invoke(app, ["status", str(run_dir)]).stdout
    assert f"budget: ${spent:.4f} of ${budget:g} spent" in text

    # A budget below what is already spent is said at once, and sends nothing.
    before = snap_server.total
    code, out = cli([*args, "--budget", "0.001"], monkeypatch, capsys)
    assert code == 3 and "at or over --budget $0.001: no new call will be sent" in out, out
    assert snap_server.total == before

    # A higher budget lets the run finish.
    code, out = cli([*args, "--budget", "10"], monkeypatch, capsys)
    assert code == 0, out
    assert (run_dir / "clusters.parquet").exists()


def test_a_cost_cap_note_clears_once_a_rerun_sends_the_calls(
        snap_server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    run_dir = tmp_path / "run"
    args = run_args(snap_server, inputs, run_dir)
    capped = CliRunner().invoke(app, [*args, "--max-cost", "0.003"])
    assert capped.exit_code == 3, capped.output
    status = CliRunner().invoke(app, ["status", str(run_dir)]).stdout
    assert "not sent: a cost limit (--max-cost or --budget) reached" in status
    assert status_json(run_dir)["llm_totals"]["skipped_budget"] > 0

    done = CliRunner().invoke(app, [*args, "--max-cost", "10"])
    assert done.exit_code == 0, done.output
    status = CliRunner().invoke(app, ["status", str(run_dir)]).stdout
    assert "not sent" not in status, status
    doc = status_json(run_dir)
    assert doc["llm_totals"]["skipped_budget"] == 0 and doc["llm_totals"]["invocations"] == 2
    assert all((s["llm"] or {}).get("skipped_budget", 0) == 0 for s in doc["stages"])


def test_the_model_each_reply_names_is_shown(snap_server: FakeOpenAIServer, inputs: Path,  # noqa: F811
                                             tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = CliRunner().invoke(app, run_args(snap_server, inputs, run_dir))
    assert done.exit_code == 0, done.output
    doc = status_json(run_dir)
    assert doc["llm_models"] == {SNAPSHOT: doc["llm_totals"]["sent"]}
    assert doc["config"]["model"] == "gpt-4o-mini"  # what was asked for is kept too
    text = CliRunner().invoke(app, ["status", str(run_dir)]).stdout
    assert f"llm: openai gpt-4o-mini (replies from {SNAPSHOT})" in text
    assert f"LLM replies came from: {SNAPSHOT} ({doc['llm_totals']['sent']:,} calls)" in text
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["llm_models"] == doc["llm_models"]


def test_a_run_from_before_the_ledger_keeps_its_counts_and_the_ledger_adds_to_them(tmp_path: Path) -> None:
    """A run whose manifest counted its LLM use the old way (at the end of each invocation)
    keeps those figures; what later invocations spend adds to them, and to its budget."""
    from featdisco.llm.base import Usage
    from featdisco.llm.cache import CallCache
    from featdisco.rundir import LLM_CACHE, RunDir
    from featdisco.runsummary import open_ledger, run_totals

    old = {"calls": 10, "sent": 10, "cached": 0, "failed": 0, "skipped_budget": 0, "attempts": 10,
           "input_tokens": 1000, "output_tokens": 500, "invocations": 3, "cost_usd": 0.5, "failed_by_reason": {}}
    run = RunDir(tmp_path / "run")
    run.update(llm_totals=old, llm_last=old, llm_by_stage={"featurize": old})
    run_id, before = open_ledger(run, run.file(LLM_CACHE))
    assert before == 0.5  # counts against a budget
    with CallCache(run.file(LLM_CACHE)) as cache:
        cache.begin_invocation(run_id, "test")
        cache.scope = "featurize"
        cache.put_ok("k", "openai", "gpt-4o-mini", "v1", "{}", {}, Usage(100, 50), 1, cost=0.25,
                     replied_model=SNAPSHOT)
    totals = run_totals(RunDir(run.path).manifest, run.path)
    assert totals.total is not None and totals.last is not None
    assert totals.total["sent"] == 11 and totals.total["invocations"] == 4
    assert totals.total["cost_usd"] == 0.75 and totals.total["input_tokens"] == 1100
    assert totals.last["sent"] == 1 and totals.models == {SNAPSHOT: 1}
    assert totals.stages[0].llm is not None and totals.stages[0].llm["sent"] == 11


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_both_backends_record_the_model_the_reply_names(tmp_path: Path, backend: str) -> None:
    """The reply's model reaches the ledger from either provider's wire format."""
    from featdisco.llm.anthropic import AnthropicLLM
    from featdisco.llm.cache import CallCache, read_ledger
    from featdisco.llm.engine import Account, CallEngine
    from featdisco.llm.openai import OpenAILLM
    from tests.fakes.openai_server import echo_features
    from tests.llm.conftest import requests_for

    with FakeOpenAIServer(lambda r: dataclasses.replace(echo_features(r), model=SNAPSHOT), api_key="sk-k") as fake:
        llm = (OpenAILLM("alias", base_url=fake.base_url, api_key="sk-k") if backend == "openai"
               else AnthropicLLM("alias", base_url=fake.root_url, api_key="sk-k"))
        engine = CallEngine(llm, CallCache(tmp_path / "c.sqlite"), progress="none",
                            account=Account(lambda: ("run", 0.0), scope="featurize"))
        assert all(r.ok for r in engine.run_sync(requests_for(["a", "b", "c"])))
        engine.close()
        assert engine.cache is not None
        engine.cache.close()
    rows = read_ledger(tmp_path / "c.sqlite", "run")
    assert rows is not None
    assert {(r.scope, r.status, r.model, r.n) for r in rows} == {("featurize", "ok", SNAPSHOT, 3)}
