"""Evidence in a run: on by default, counted in the manifest and the run's log, off with
--no-evidence (a config field the featurize stage declares, so it reruns), both costs in a
dry run, and the transform of a fitted run following the fitted setting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.pipeline import Pipeline, PipelineConfig, config_from_manifest
from tests.conftest import write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import HALLUCINATED, expected_quotes, pipeline_handler

PIECES = 24  # 12 transcripts: a user turn and a response each


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chats.jsonl", [
        {"id": f"c{i}", "model": "m", "messages": [
            {"role": "user", "content": f"Could you help me plan dinner number {i} for my family tonight?"},
            {"role": "assistant", "content": f"Sure. For dinner {i}, roast the vegetables first and then "
                                             "season the soup with fresh herbs before serving it warm."}]}
        for i in range(12)])


def cfg(server: FakeOpenAIServer, **kw: object) -> PipelineConfig:
    base: dict[str, object] = {"llm": "openai", "model": "fake", "base_url": server.base_url, "concurrency": 8}
    return PipelineConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_a_run_counts_unverifiable_quotes_and_no_evidence_reruns_featurize(
        tmp_path: Path, server: FakeOpenAIServer, inputs: Path) -> None:
    run = tmp_path / "run"
    lines: list[str] = []
    Pipeline(run, cfg(server), log=lines.append).run([inputs], stages=("split", "featurize"))
    manifest = json.loads((run / "manifest.json").read_text())
    counts = manifest["stages"]["featurize"]["counts"]
    assert counts["quotes"] == {k: v * PIECES for k, v in expected_quotes().items()}
    assert counts["unverified_share"] == round(2 / 9, 4)
    assert manifest["prompts"]["featurize"].startswith("featurize.v4.txt@") and manifest["config"]["evidence"]
    assert any("48 of 216 quotes were not found in their piece (22.2% unverifiable)" in x for x in lines), lines
    feats = pq.read_table(run / "features.parquet").to_pylist()
    assert all(f["verified"] is False for f in feats if f["quote"] == HALLUCINATED)
    assert sum(f["verified"] is True for f in feats) == 7 * PIECES

    lines.clear()
    Pipeline(run, cfg(server, evidence=False), log=lines.append).run(stages=("split", "featurize"))
    assert any(x.startswith("featurize: done") for x in lines), lines  # not "up to date, skipped"
    plain = pq.read_table(run / "features.parquet")
    assert plain.column("quote").null_count == plain.num_rows == 10 * PIECES
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["prompts"]["featurize"].startswith("featurize.v3.txt@")
    assert "quotes" not in manifest["stages"]["featurize"]["counts"]


def test_the_run_summary_says_how_many_quotes_are_unverifiable(
        tmp_path: Path, server: FakeOpenAIServer, inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from featdisco.cli.run import print_summary

    run = tmp_path / "run"
    result = Pipeline(run, cfg(server)).run([inputs], stages=("split", "featurize"))
    capsys.readouterr()
    print_summary(result)
    text = " ".join(capsys.readouterr().out.split())
    assert "evidence: 48 of 216 quotes not found in their piece (22.2% unverifiable" in text


def test_dry_run_shows_both_costs(tmp_path: Path, server: FakeOpenAIServer, inputs: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "r"), "--dry-run",
                                      "--llm", "openai", "--base-url", server.base_url, "--model", "gpt-4o-mini"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "with evidence (quotes, the default):" in out and "without (--no-evidence):" in out
    pipe = Pipeline(tmp_path / "r2", cfg(server, model="gpt-4o-mini"))
    est = pipe.estimate([inputs])
    pipe.close()
    assert est.calls == PIECES and est.output_tokens > est.other.output_tokens > 0
    assert est.cost > est.other.cost and server.total == 0


def test_transform_follows_the_fitted_setting_unless_told(tmp_path: Path) -> None:
    """A run from before evidence featurized without quotes: its transform must too; and
    --no-evidence on a run fitted with evidence uses the plain packaged prompt."""
    old = tmp_path / "old"
    (old / "prompts").mkdir(parents=True)
    (old / "prompts" / "featurize.v1.txt").write_text("### user\n$text\n")
    (old / "manifest.json").write_text(json.dumps({"config": {"min_features": 10},
                                                   "prompts": {"featurize": "featurize.v1.txt@abc"},
                                                   "stages": {}}))
    assert config_from_manifest(old).evidence is False
    new = tmp_path / "new"
    (new / "prompts").mkdir(parents=True)
    (new / "prompts" / "featurize.v2.txt").write_text("### user\n$text\n")
    (new / "manifest.json").write_text(json.dumps({"config": {"evidence": True},
                                                   "prompts": {"featurize": "featurize.v2.txt@abc"},
                                                   "stages": {}}))
    assert config_from_manifest(new).prompt_files["featurize"].endswith("featurize.v2.txt")
    plain = config_from_manifest(new, {"evidence": False})
    assert plain.evidence is False and "featurize" not in plain.prompt_files
    assert Pipeline.load_prompts(plain)["featurize"].file == "featurize.v3.txt"


def test_dry_run_says_when_the_two_costs_rest_on_different_bases() -> None:
    """A run with cached featurize replies estimates its own setting from their mean length
    and the other setting from max_tokens: "without evidence" then looks dearer than "with".
    The line must say which figure is which, or it misleads."""
    from featdisco.llm.summary import Estimate
    from featdisco.stages.featurize import FeaturizeEstimate

    seen = Estimate(70, 70, 0, 70, 56_710, 12_880, 0.0433, "mean reply length seen in the cache")
    bound = Estimate(70, 70, 0, 70, 50_000, 26_880, 0.0609, "max_tokens, an upper bound")
    text = str(FeaturizeEstimate(seen, bound, evidence=True))
    assert ("with evidence (quotes, the default): 12,880 output tokens (mean reply length seen in the cache), "
            "cost $0.0433; without (--no-evidence): 26,880 output tokens (max_tokens, an upper bound), "
            "cost $0.0609") in text
    same = str(FeaturizeEstimate(bound, bound, evidence=True))
    assert "without (--no-evidence): 26,880 output tokens, cost $0.0609" in same
