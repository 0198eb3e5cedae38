"""Issue 16 item 10 (the aggregation rule): --min-transcripts N hides every cluster drawn from
fewer than N distinct transcripts from the printed tables, --json and the report; they are
counted, said, and shown with --show-private."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.report import build_report
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import fake_api_key, pipeline_server  # noqa: F401  (fixtures: api_key, server)
from tests.test_pipeline import K, inputs  # noqa: F401  (fixtures)


def rows(result: object) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]  # type: ignore[attr-defined]


def test_analysis_tables_hide_clusters_of_too_few_transcripts(tmp_path: Path) -> None:
    pieces = [PlantedPiece(f"t{t}", 0, "user", [0] + ([1] if t == 7 else [])) for t in range(12)]
    run = write_run(tmp_path / "run", pieces, [("user", "Common"), ("user", "Only in one conversation")])
    hidden = CliRunner().invoke(app, ["frequency", str(run), "--json", "--min-transcripts", "2"])
    assert hidden.exit_code == 0, hidden.output
    assert [r["label"] for r in rows(hidden)] == ["Common"]
    assert "clusters hidden: 1 drawn from fewer than 2 transcripts (--show-private shows them)" in hidden.output
    shown = CliRunner().invoke(app, ["frequency", str(run), "--json", "--min-transcripts", "2", "--show-private"])
    assert sorted(r["label"] for r in rows(shown)) == ["Common", "Only in one conversation"]
    co = CliRunner().invoke(app, ["cooccur", str(run), "--min-support", "1", "--json", "--min-transcripts", "2"])
    assert all(1 not in (r["cluster_a"], r["cluster_b"]) for r in rows(co))


def test_run_and_report_hide_them_and_say_so(server: FakeOpenAIServer, inputs: Path,  # noqa: F811
                                            tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai", "--model", "fake",
            "--base-url", server.base_url, "--clusters", str(K), "--min-transcripts", "1000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    n = 3 * K
    assert f"clusters hidden: {n} drawn from fewer than 1,000 transcripts" in result.stdout
    assert "top user clusters" not in result.stdout
    again = CliRunner().invoke(app, [*args, "--json", "--show-private"])
    assert len(rows(again)) == n
    build_report(run_dir, search=False)  # the run's --min-transcripts is the report's default
    ov = json.loads((run_dir / "report" / "data" / "overview.js").read_text().split("(", 1)[1].split(",", 1)[1]
                    .rsplit(")", 1)[0])
    assert all(info["rare"] == info["clusters"] and info["top"] == [] and info["top_all"] for info in
               ov["kinds"].values())
    assert any("drawn from fewer than 1,000 transcripts" in line for line in ov["headline"])
    build_report(run_dir, search=False, min_transcripts=1)
    ov = json.loads((run_dir / "report" / "data" / "overview.js").read_text().split("(", 1)[1].split(",", 1)[1]
                    .rsplit(")", 1)[0])
    assert all(info["rare"] == 0 and info["top"] for info in ov["kinds"].values())
