"""Issue 16 item 6: one meaning per exit code. Every command that calls an LLM exits 3 when
calls failed, saying how many and why; `-o x.csv` writes CSV or refuses."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from tests.analysis.planted import PlantedPiece, write_run
from tests.analysis.test_label_quality import judge
from tests.conftest import write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import (  # noqa: F401  (fixtures: api_key, server)
    GROUP_NAMES,
    GROUPS,
    fake_api_key,
    pipeline_handler,
    pipeline_server,
)
from tests.test_pipeline import fitted, inputs  # noqa: F401  (fixtures)


def half_broken_judge(req: FakeRequest) -> Reply:
    """The label judge, except that labels about cooking get a reply that is not JSON."""
    if "Label: Cluster about cooking" in req.body["messages"][-1]["content"]:
        return Reply(content="I would rather not answer in JSON.")
    return judge(req)


@pytest.fixture(scope="module")
def judge_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(half_broken_judge) as srv:
        yield srv


def test_score_labels_exits_3_and_says_how_many_failed_and_why(judge_server: FakeOpenAIServer,
                                                                tmp_path: Path) -> None:
    clusters = [("response", f"Cluster about {g}") for g in GROUP_NAMES]
    pieces = [PlantedPiece(f"t{i}", 1, "response", [i % 3]) for i in range(60)]
    words = {c: GROUPS[g] for c, g in enumerate(GROUP_NAMES)}
    run = write_run(tmp_path / "run", pieces, clusters, centroids={"response": np.eye(3, 4)},
                    feature_text=lambda c, i: words[c][(i // 3) % len(words[c])])
    result = CliRunner().invoke(app, ["score-labels", str(run), "--llm", "openai", "--model", "fake-judge",
                                      "--base-url", judge_server.base_url, "--clusters", "3", "--members", "4",
                                      "--others", "4"])
    assert result.exit_code == 3, result.output
    assert "score-labels: 1 of 3 LLM calls failed (" in result.output
    assert "2 of 3 labels scored" in result.output  # the others are still reported
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["llm_by_analysis"]["label_quality"]["failed"] == 1


def poisoned(req: FakeRequest) -> Reply:
    """The pipeline's rater, except that pieces mentioning poison get no usable features."""
    if "poison" in req.body["messages"][-1]["content"]:
        return Reply(content="not JSON")
    return pipeline_handler(req)


def test_transform_with_failed_calls_exits_3(fitted: Path, tmp_path: Path) -> None:  # noqa: F811
    new = write_jsonl(tmp_path / "new.jsonl", [
        {"id": f"x{i}", "messages": [{"role": "user", "content": f"Question {i} about poison" if i < 2 else
                                      f"Question {i} about bread"},
                                     {"role": "assistant", "content": f"Answer {i}"}]} for i in range(4)])
    with FakeOpenAIServer(poisoned) as srv:
        result = CliRunner().invoke(app, ["transform", str(fitted), str(new), "-o", str(tmp_path / "out"),
                                          "--base-url", srv.base_url, "-q"])
    assert result.exit_code == 3, result.output
    assert "transform incomplete: 2 of" in result.output and "LLM calls failed (" in result.output


def test_split_to_csv_writes_csv_and_refuses_other_names(inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "pieces.csv"
    result = CliRunner().invoke(app, ["split", str(inputs / "reasoning.jsonl"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert rows and {"piece_id", "transcript_id", "kind", "text"} <= rows[0].keys()
    assert {r["kind"] for r in rows} == {"user", "thought", "response"}
    assert not list(tmp_path.glob("*.tmp"))
    refused = CliRunner().invoke(app, ["split", str(inputs / "reasoning.jsonl"), "-o", str(tmp_path / "p.json")])
    assert "split writes Parquet (.parquet) or CSV (.csv), not .json" in str(refused.exception)
    assert not (tmp_path / "p.json").exists()


def test_split_counts_as_json(inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    """Issue 16 item 5 for split: --json prints the pieces per model and kind as rows."""
    result = CliRunner().invoke(app, ["split", str(inputs / "reasoning.jsonl"), "-o", str(tmp_path / "p.parquet"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [{"model": "thinker", "user": 12, "thought": 12, "response": 12}]


def test_hierarchy_exits_3_when_naming_parents_failed(tmp_path: Path) -> None:
    from tests.analysis.test_hierarchy_stability import namer, planted

    def half_namer(req: FakeRequest) -> Reply:
        asked = " ".join(str(m["content"]) for m in req.body["messages"])  # a repair request too
        return Reply(content="no JSON here") if "Pair 0 side" in asked else namer(req)

    run = planted(tmp_path / "run")
    with FakeOpenAIServer(half_namer) as srv:
        result = CliRunner().invoke(app, ["hierarchy", str(run), "--branching", "2", "--llm", "openai",
                                          "--model", "fake", "--base-url", srv.base_url])
    assert result.exit_code == 3, result.output
    assert "1 of 3 LLM calls failed" in result.output and "Group of 2 clusters" in result.output
