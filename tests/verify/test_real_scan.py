"""validate and the report's scan page on the output of the real ``featdisco scan`` (scripted
fake rater over HTTP), not on a hand-written table: the quotes' spans are the ones scan
verified, and a person's labels are scored against scan's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.evidence.validate import validate
from featdisco.report import tables
from featdisco.report.evidence import write_evidence
from featdisco.report.shards import ShardWriter
from featdisco.rundir import RunDir
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import pipeline_handler

HITS = {"a": 12, "b": 2}  # of 40 thoughts per model, those that track their token budget


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pieces = [PlantedPiece(f"{m}{i}", 1, "thought", [0], model=m,
                           text=(f"Thought {i}. I must mind my Remaining  Token Budget before I answer." if i < HITS[m]
                                 else f"Thought {i}. Let me just answer the question directly."))
              for m in HITS for i in range(40)]
    run = write_run(tmp_path_factory.mktemp("real-scan") / "run", pieces, [("thought", "Budget")])
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    try:
        with FakeOpenAIServer(pipeline_handler) as srv:
            result = CliRunner().invoke(app, ["scan", str(run), "--question", "Does it track its token budget?",
                                              "--kind", "thought", "--name", "budget", "--by", "model", "--llm",
                                              "openai", "--base-url", srv.base_url, "--model", "fake", "-q"])
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    return run


def test_validate_scores_a_person_against_scan(run: Path, tmp_path: Path) -> None:
    rows = ["piece_id,target,label"]
    rows += [f"a{i}:1:thought,scan:budget,true" for i in range(11)]  # 11 hits the person agrees with
    rows += ["a11:1:thought,scan:budget,false"]  # a hit the person rejects
    rows += [f"a{i}:1:thought,scan:budget,false" for i in range(20, 26)]  # 6 agreed non-hits
    rows += ["a30:1:thought,scan:budget,true"]  # a non-hit the person says shows it
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    r = validate(run, tmp_path / "l.csv").iloc[0]
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (11, 1, 1, 6)
    assert r["precision"] == pytest.approx(11 / 12) and r["recall"] == pytest.approx(11 / 12)
    # pe = (12*12 + 7*7) / 19^2; kappa = (17/19 - pe) / (1 - pe)
    pe = (12 * 12 + 7 * 7) / 19 ** 2
    assert r["kappa"] == pytest.approx((17 / 19 - pe) / (1 - pe))


def test_scan_page_highlights_what_scan_verified(run: Path, tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "data")
    ev = write_evidence(run, writer, tables.piece_order(run), pq.read_table(run / "clusters.parquet"),
                        RunDir(run).manifest)
    (summary,) = ev["scans"]
    assert (summary["n"], summary["positives"]) == (80, 14)
    assert summary["rate"] == pytest.approx(14 / 80) and summary["ci_low"] < 14 / 80 < summary["ci_high"]
    raw = (tmp_path / "data" / "sc" / "budget.js").read_bytes()
    page = json.loads(b"[" + raw[len(b"FD.put("):-len(b");\n")] + b"]")[1]
    by = {g["group"]: g for g in page["by"][0]["rows"]}
    assert (by["a"]["positives"], by["b"]["positives"]) == (12, 2)
    hits = [it for it in page["items"] if it["positive"]]
    assert len(hits) == 14
    for it in hits:  # scan's quote is re-cased and re-spaced; the span marks the piece's own words
        assert it["verified"] is True
        assert it["text"][it["start"] - it["off"]:it["end"] - it["off"]] == "Remaining  Token Budget"
