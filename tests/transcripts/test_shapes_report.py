"""An agent transcript of hundreds of steps goes through a real run and into the report,
with each response's tool output beside it (shown, never featurized)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from featdisco.pipeline import Pipeline, PipelineConfig
from featdisco.report import build_report
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import pipeline_handler
from tests.report.test_build import all_transcripts
from tests.transcripts.test_shapes_agents import FIXTURES, SESSION, _long_session


def build_agent_run(root: Path, steps: int = 300) -> Path:
    """A real run (fake LLM server) over a ``steps``-step session and a real one; returns its folder."""
    inputs = root / "inputs"
    inputs.mkdir(parents=True)
    _long_session(inputs / "long.jsonl", steps)
    shutil.copy(FIXTURES / "claude_code" / f"{SESSION}.jsonl", inputs / "session.jsonl")
    os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(pipeline_handler) as server:
        cfg = PipelineConfig(llm="openai", model="fake-rater", base_url=server.base_url, n_clusters=3,
                             concurrency=8)
        result = Pipeline(root / "run", cfg).run([inputs])
    assert result.complete
    return root / "run"


def test_long_agent_session_runs_and_reports_with_tool_output(tmp_path: Path) -> None:
    build_agent_run(tmp_path)
    pieces = pq.read_table(tmp_path / "run" / "pieces.parquet").to_pylist()
    assert sum(1 for p in pieces if p["transcript_id"] == "long") == 1 + 2 * 300
    # tool output travels beside the response it answers, and only there
    edit = next(p for p in pieces if p["transcript_id"] == SESSION and "[tool call] Bash" in p["text"])
    assert "unconverted data remains" in edit["tool_output"]
    assert all("x = 1" not in p["text"] for p in pieces)
    build_report(tmp_path / "run")
    rows = {r["id"]: r for r in all_transcripts(tmp_path / "run" / "report")}
    long = rows["long"]["pieces"]
    assert len(long) == 601 and long[-1]["turn"] == 599
    assert long[-1]["tools"] == "x = 1\n" * 200
    assert json.loads(rows[SESSION]["meta"])["summary"] == "Fix failing date parser test"
