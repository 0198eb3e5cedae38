"""Issue 16 item 10: ratings and privacy flags that carry no information do not act on the
output, and the run summary and the report say so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.report import build_report
from featdisco.stages.rate import judge_batch, privacy_reason_names_data
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import (
    fake_api_key,  # noqa: F401  (fixtures: api_key, server)
    pipeline_handler,
)
from tests.test_pipeline import K, inputs  # noqa: F401  (fixtures)

COPIED = "This cluster describes the private reasoning of an AI model."


def careless_rater(req: FakeRequest) -> Reply:
    """What the embedded model did on real traces: 100 for every cluster, one copied reason,
    every cluster 'private' because thoughts are 'private reasoning'."""
    reply = pipeline_handler(req)
    data = json.loads(reply.content or "{}")
    if "ratings" not in data:
        return reply
    labels = re.findall(r"^\d+\. label: (.*)$", req.body["messages"][-1]["content"], re.M)
    for r, label in zip(data["ratings"], labels, strict=True):
        r.update(interest=100, reason=COPIED, private=True, private_reason="the private reasoning of an AI model")
        if "sadness" in label:  # a real privacy flag: it says what is private
            r["private_reason"] = "a user's full name and home address"
    return Reply(content=json.dumps(data))


def test_uninformative_ratings_and_unfounded_privacy_flags_are_not_used(inputs: Path,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(careless_rater) as srv:
        result = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai",
                                          "--model", "fake", "--base-url", srv.base_url, "--clusters", str(K)])
    assert result.exit_code == 0, result.output
    clusters = pq.read_table(run_dir / "clusters.parquet").to_pylist()
    assert all(c["interest"] is None for c in clusters)  # not ranked by a score that says nothing
    private = [c for c in clusters if c["private"]]
    assert private and private == [c for c in clusters if "sadness" in c["label"]]  # only flags naming the data
    rate = json.loads((run_dir / "manifest.json").read_text())["stages"]["rate"]["counts"]
    assert rate["uninformative_batches"] == rate["batches"] and rate["private_discarded"] == len(clusters) - len(private)
    said = " ".join(result.stdout.split())
    assert f"ratings: {rate['batches']} of {rate['batches']} batches were uninformative (every score 100" in said
    assert f"privacy flags: {rate['private_discarded']} discarded because their reason names nothing private" in said
    status = CliRunner().invoke(app, ["status", str(run_dir)])
    assert "batches were uninformative" in status.stdout
    build_report(run_dir, search=False)
    overview = (run_dir / "report" / "data" / "overview.js").read_text()
    assert "batches were uninformative" in overview and "privacy flags:" in overview


def test_the_rules_on_their_own() -> None:
    assert judge_batch([100, 100, 100], ["a", "b", "c"]) == "every score 100"
    assert judge_batch([90, 40, 10], ["Copied.", "copied", "COPIED!"]) == "the same reason for every cluster"
    assert judge_batch([90, 40], ["Deception about tools.", "Formatting with headers."]) is None
    assert judge_batch([100], ["alone"]) is None  # one cluster: nothing to compare it with
    assert not privacy_reason_names_data("describes the private reasoning of an AI model")
    assert not privacy_reason_names_data("contains personal information")  # names no kind of data
    assert privacy_reason_names_data("a user's home address and phone number")
    assert privacy_reason_names_data("mentions a patient's diagnosis")


def test_rate_batch_zero_sends_no_rating_call_and_lists_clusters_by_size(inputs: Path,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    """Issue 23: the demo turns rating off (its slowest calls on the local model); nothing is
    asked, no cluster gets an interest or a privacy flag, and the tables say they are by size."""
    asked: list[str] = []

    def handler(req: FakeRequest) -> Reply:
        if "For every cluster give" in str(req.body["messages"][-1]["content"]):
            asked.append(req.key)
        return pipeline_handler(req)

    run_dir = tmp_path / "run"
    with FakeOpenAIServer(handler) as srv:
        result = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai",
                                          "--model", "fake", "--base-url", srv.base_url, "--clusters", str(K),
                                          "--rate-batch", "0"])
    assert result.exit_code == 0, result.output
    assert asked == []
    clusters = pq.read_table(run_dir / "clusters.parquet").to_pylist()
    assert clusters and all(c["interest"] is None and not c["private"] for c in clusters)
    ratings = pq.read_table(run_dir / "ratings.parquet").to_pylist()
    assert {r["status"] for r in ratings} == {"not rated"}
    assert "clusters by pieces" in result.stdout and "clusters by interest" not in result.stdout
    bad = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "bad"), "--rate-batch", "-1"])
    assert bad.exit_code == 2
