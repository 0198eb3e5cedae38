"""The report's page for a ``featdisco ask`` analysis, in a real browser: the question, the
plan, each step's table, the answer and only the citations that verified."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.report import build_report
from tests.analysis.planted import write_run
from tests.evidence.test_ask import INVENTED, QUESTION, handler, planted_pieces
from tests.fakes.openai_server import FakeOpenAIServer


@pytest.fixture()
def ask_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = write_run(tmp_path / "run", planted_pieces(), [("response", "Apologises to the user"),
                                                         ("response", "Answers directly"), ("user", "Polite user request")])
    clusters = pq.read_table(run / "clusters.parquet")  # the columns a named, rated run's table has
    for col, values in (("size", [40, 160, 200]), ("pieces", [50, 150, 200]), ("transcripts", [50, 150, 200]),
                        ("interest", [80, 20, 10]), ("private", [False] * 3), ("description", ["d"] * 3)):
        clusters = clusters.append_column(col, pa.array(values))
    pq.write_table(clusters, run / "clusters.parquet")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(handler(invent=True)) as srv:
        result = CliRunner().invoke(app, ["ask", str(run), QUESTION, "--llm", "openai", "--base-url", srv.base_url,
                                          "--model", "fake", "--max-sample", "500", "-q"])
    assert result.exit_code == 0, result.output
    build_report(run, search=False)
    return run / "report"


def test_the_ask_page_shows_plan_steps_answer_and_only_verified_quotes(browser: Any, ask_report: Path) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((ask_report / "index.html").as_uri() + "#/a/ask_which_model_apologises_more")
    page.wait_for_selector("h1.ask-question")
    text = page.inner_text("main")
    assert QUESTION in text
    assert "Step 1: scan" in text and "Step 2: compare" in text and "Apologises to the user" in text
    assert "Model a apologises more: 40.0%" in text
    doc = json.loads((ask_report.parent / "ask_which_model_apologises_more.json").read_text())
    assert all(c["piece_id"] in text for c in doc["citations"]) and INVENTED not in text
    assert "2 verified, 2 dropped" in text and "1 flagged" in text
    if os.environ.get("FEATDISCO_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["FEATDISCO_SCREENSHOTS"]) / "ask.png"), full_page=True)
    assert errors == []
    page.close()
