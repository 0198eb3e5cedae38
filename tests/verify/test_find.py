"""``featdisco find`` with the real minilm embedder on a small run fitted with the scripted
rater, whose three planted themes (markdown, cooking, sadness) are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featdisco.analysis.visibility import visibility
from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.evidence.find import find_clusters
from tests.pipeline_fakes import GROUPS
from tests.report.runs import build_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return build_run(tmp_path_factory.mktemp("find"), shared_data)


def hidden(run: Path) -> frozenset[int]:
    return visibility(run).hidden


def test_query_finds_the_theme_in_every_kind(run: Path) -> None:
    df = find_clusters(run, "preparing food in the kitchen", top=9, hidden=hidden(run))
    assert len(df) == 3  # the cooking cluster of each kind; the others are below the relevance floor
    assert (df["score"] > df.attrs["floor"]).all()
    top = df.head(3)
    assert all("cooking" in lab for lab in top["label"]), df[["label", "score"]]
    assert set(top["kind"]) == {"user", "thought", "response"}
    assert df["score"].is_monotonic_decreasing and df["rank"].tolist() == list(range(1, len(df) + 1))
    assert all(0 < p <= 1 for p in df["prevalence"])
    assert all(b in GROUPS["cooking"] for b in top["best_member"])  # the member that matched, shown
    df = find_clusters(run, "feeling sad and lonely", kinds=["response"], top=1)
    assert len(df) == 1 and "sadness" in df.loc[0, "label"] and df.loc[0, "kind"] == "response"


def test_hidden_clusters_left_out_before_ranking(run: Path) -> None:
    sad = find_clusters(run, "feeling sad and lonely", kinds=["thought"], top=1)
    assert "sadness" in sad.loc[0, "label"]
    df = find_clusters(run, "feeling sad and lonely", kinds=["thought"], top=1,
                       hidden=frozenset({int(sad.loc[0, "cluster_id"])}))
    assert df.empty  # no other thought cluster is about sadness: none is shown in its place
    assert df.attrs["best_score"] < df.attrs["floor"]


def test_cli_json_and_table(run: Path) -> None:
    result = CliRunner().invoke(app, ["find", str(run), "markdown headings", "--json", "--top", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all("markdown" in r["label"] for r in rows)
    assert {"cluster_id", "kind", "size", "prevalence", "score", "label"} <= set(rows[0])
    result = CliRunner().invoke(app, ["find", str(run), "markdown headings", "--top", "3"])
    assert result.exit_code == 0 and "closest to 'markdown headings'" in result.output
    everything = CliRunner().invoke(app, ["find", str(run), "markdown headings", "--json", "--show-private"])
    assert len(everything.stdout.splitlines()) == 3  # one markdown cluster per kind, hidden ones too
    assert all("markdown" in json.loads(r)["label"] for r in everything.stdout.splitlines())


def test_a_query_about_nothing_finds_nothing_and_says_so(run: Path) -> None:
    """A ranking always has a first place; without the floor gibberish returned 'matches'."""
    for query in ("zxqv blorp", "12345", "lorem ipsum dolor sit amet"):
        df = find_clusters(run, query)
        assert df.empty, (query, df[["label", "score"]])
    result = CliRunner().invoke(app, ["find", str(run), "zxqv blorp"])
    assert result.exit_code == 0, result.output
    # the run hides one private cluster, which find did not search: the verdict is about the others
    assert "no cluster shown is about 'zxqv blorp': none scores above the relevance floor" in result.output
    assert "the 1 hidden cluster was not searched" in result.output


def test_a_huge_query_is_not_echoed_whole(run: Path) -> None:
    query = "markdown headings " + "and more words " * 2000
    result = CliRunner().invoke(app, ["find", str(run), query, "--top", "1"])
    assert result.exit_code == 0, result.output
    assert "and more words " * 10 not in result.output and len(result.output) < 2000


def test_bad_queries(run: Path, tmp_path: Path) -> None:
    with pytest.raises(FeatdiscoError, match="the query is empty"):
        find_clusters(run, "  ")
    with pytest.raises(FeatdiscoError, match="--kind 'answer'"):
        find_clusters(run, "x", kinds=["answer"])
    with pytest.raises(FeatdiscoError, match=r"has no strings\.parquet"):
        find_clusters(tmp_path, "x")


def test_top_0_does_not_claim_that_no_cluster_is_about_the_query(run: Path) -> None:
    """--top 0 lists nothing, but the query does match clusters: featdisco used to say "no cluster
    is about 'markdown headings'" with the best cluster scoring above the floor in the same line."""
    result = CliRunner().invoke(app, ["find", str(run), "markdown headings", "--top", "0"])
    assert result.exit_code == 0, result.output
    assert "no cluster is about" not in result.output


def test_a_miss_among_the_shown_clusters_does_not_speak_for_the_hidden_ones(run: Path) -> None:
    """With every cluster hidden (drawn from too few transcripts), find used to say "no cluster
    is about 'preparing food in the kitchen'", though the cooking clusters are in the run."""
    result = CliRunner().invoke(app, ["find", str(run), "preparing food in the kitchen", "--min-transcripts", "100000"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no cluster is about" not in text
    assert "no cluster shown is about 'preparing food in the kitchen'" in text
    assert "hidden clusters were not searched (--show-private searches them)" in text
