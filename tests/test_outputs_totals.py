"""Issue 16 item 1 / issue 12 item 4: the run's LLM totals over every invocation, the same
in the manifest, `featdisco status`, `status --json`, the run summary and the report headline,
and adding up to the stage table."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.report import build_report
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import fake_api_key, pipeline_server  # noqa: F401  (fixtures: api_key, server)
from tests.test_pipeline import K, inputs  # noqa: F401  (fixtures)


def test_totals_cover_every_invocation_and_agree_everywhere(server: FakeOpenAIServer,
                                                            inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    run_dir = tmp_path / "resumed"
    args = ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai", "--model", "gpt-4o-mini",
            "--base-url", server.base_url, "--clusters", str(K), "--concurrency", "1"]
    before = server.total
    capped = CliRunner().invoke(app, args)
    assert capped.exit_code == 0, capped.output
    first = server.total - before
    done = CliRunner().invoke(app, [*args[:-4], "--clusters", str(K + 1), "--concurrency", "1"])
    assert done.exit_code == 0, done.output
    sent = server.total - before
    assert 0 < first < sent, capped.output

    status = CliRunner().invoke(app, ["status", str(run_dir), "--json"])
    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    total, last = doc["llm_totals"], doc["llm_last"]
    assert total["sent"] == sent and total["invocations"] == 2
    assert last["sent"] == sent - first
    assert sum(s["llm"]["sent"] for s in doc["stages"] if s["llm"]) == sent  # the stage table adds up
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["llm_totals"]["sent"] == sent and manifest["llm_totals"]["input_tokens"] == total["input_tokens"]

    words = f"LLM, all 2 invocations: {sent:,} calls sent"
    assert words in done.stdout  # the run summary
    text = CliRunner().invoke(app, ["status", str(run_dir)])
    assert words in text.stdout and f"LLM, last invocation: {sent - first:,} calls sent" in text.stdout

    build_report(run_dir, search=False)
    overview = (run_dir / "report" / "data" / "overview.js").read_text()
    assert words in overview
    assert f'"sent":{sent}' in overview.replace(" ", "")


def test_the_of_which_lines_follow_the_total_they_break_down_not_the_last_invocation() -> None:
    """After a run, then a scan, then a rerun of the run: "of which analyses: scan 8 sent"
    counts over every invocation, so it must not read as part of the last (a run that
    called no analysis)."""
    from featdisco.runsummary import Totals, headline, usage

    total = {**usage({"sent": 99, "input_tokens": 10, "output_tokens": 5}), "invocations": 3}
    last = {**usage({"sent": 41, "input_tokens": 4, "output_tokens": 2}), "by": ["run"]}
    scan = usage({"sent": 8, "input_tokens": 1, "output_tokens": 1})
    lines = headline(Totals([], total, last, {"scan": scan}))  # type: ignore[arg-type]
    assert lines[0].startswith("LLM, all 3 invocations: ")
    last_at = next(i for i, x in enumerate(lines) if x.startswith("LLM, last invocation: "))
    assert lines[last_at].endswith("(made by: run)")
    assert lines.index("of which analyses: scan 8 sent") < last_at
    assert all(i < last_at for i, x in enumerate(lines) if x.startswith("of which"))
