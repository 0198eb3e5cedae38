"""Issue 16 item 4: a transform's output folder is a run for the analyses and the report,
with the fitted dictionary's labels and this data's counts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.report import build_report
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import fake_api_key, pipeline_server  # noqa: F401  (fixtures: api_key, server)
from tests.test_pipeline import fitted, inputs  # noqa: F401  (fixtures)


def test_analyses_and_report_accept_a_transform_output(server: FakeOpenAIServer, fitted: Path,  # noqa: F811
                                                       inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "applied"
    done = CliRunner().invoke(app, ["transform", str(fitted), str(inputs / "mt_bench"), "-o", str(out), "-q"])
    assert done.exit_code == 0, done.output
    labels = dict(zip(*pq.read_table(fitted / "clusters.parquet", columns=["cluster_id", "label"]).to_pydict().values(),
                      strict=True))
    for args in (["frequency"], ["compare", "--by", "model"], ["cooccur", "--min-support", "2"],
                 ["probe", "--jobs", "1", "--min-positives", "2"]):
        result = CliRunner().invoke(app, [args[0], str(out), *args[1:], "--json"])
        assert result.exit_code == 0, (args, result.output, result.exception)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert rows, args
        for r in rows:  # the fitted dictionary's labels
            for id_col, label_col in (("cluster_id", "label"), ("cluster_a", "label_a")):
                if id_col in r and label_col in r:
                    assert r[label_col] == labels[r[id_col]], (args, r)
    freq = [json.loads(line) for line in CliRunner().invoke(app, ["frequency", str(out), "--json"]).stdout.splitlines()]
    pieces = pq.read_table(out / "pieces.parquet", columns=["kind"]).column(0).to_pylist()
    assert {r["kind_pieces"] for r in freq if r["kind"] == "user"} == {pieces.count("user")}  # this data's counts

    stats = build_report(out, search=False)
    assert stats.clusters == len(labels)
    shard = (out / "report" / "data" / "k" / "response.js").read_text()
    assert any(lab in shard for lab in labels.values())
