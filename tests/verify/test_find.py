"""``featdisco find`` with the real minilm embedder on a small run fitted with the scripted
rater, whose three planted themes (markdown, cooking, sadness) are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.evidence.find import find_clusters
from tests.pipeline_fakes import GROUPS
from tests.report.runs import build_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return build_run(tmp_path_factory.mktemp("find"), shared_data)


def test_query_finds_the_theme_in_every_kind(run: Path) -> None:
    df, hidden = find_clusters(run, "preparing food in the kitchen", top=9)
    assert len(df) == 8 and hidden == 1  # the rater flagged one thought cluster private
    top = df.head(3)
    assert all("cooking" in lab for lab in top["label"]), df[["label", "score"]]
    assert set(top["kind"]) == {"user", "thought", "response"}
    assert df["score"].is_monotonic_decreasing and df["rank"].tolist() == list(range(1, 9))
    assert all(0 < p <= 1 for p in df["prevalence"])
    assert all(b in GROUPS["cooking"] for b in top["best_member"])  # the member that matched, shown
    df, _ = find_clusters(run, "feeling sad and lonely", kinds=["response"], top=1)
    assert len(df) == 1 and "sadness" in df.loc[0, "label"] and df.loc[0, "kind"] == "response"


def test_private_clusters_only_when_asked(run: Path) -> None:
    df, hidden = find_clusters(run, "feeling sad and lonely", kinds=["thought"], include_private=True, top=1)
    assert hidden == 0 and bool(df.loc[0, "private"]) and "sadness" in df.loc[0, "label"]
    df, hidden = find_clusters(run, "feeling sad and lonely", kinds=["thought"], top=1)
    assert hidden == 1 and "sadness" not in df.loc[0, "label"]


def test_cli_json_and_table(run: Path) -> None:
    result = CliRunner().invoke(app, ["find", str(run), "markdown headings", "--json", "--top", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 2 and all("markdown" in r["label"] for r in rows)
    assert {"cluster_id", "kind", "size", "prevalence", "score", "label"} <= set(rows[0])
    result = CliRunner().invoke(app, ["find", str(run), "markdown headings", "--top", "3"])
    assert result.exit_code == 0 and "closest to 'markdown headings'" in result.output
    assert "1 private cluster left out" in result.output


def test_bad_queries(run: Path, tmp_path: Path) -> None:
    with pytest.raises(FeatdiscoError, match="the query is empty"):
        find_clusters(run, "  ")
    with pytest.raises(FeatdiscoError, match="--kind 'answer'"):
        find_clusters(run, "x", kinds=["answer"])
    with pytest.raises(FeatdiscoError, match=r"has no strings\.parquet"):
        find_clusters(tmp_path, "x")
