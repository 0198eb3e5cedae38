"""Curation end to end: `featdisco edit` on a real small run (fake LLM server, real MiniLM
embedder, faiss clustering), each edit kind, an edit surviving a rerun that reclusters, and
an edit whose clusters are gone being reported rather than dropped."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from typer.testing import CliRunner

import featdisco
from featdisco.analysis.activations import load_activations
from featdisco.cli import app
from featdisco.pipeline import Pipeline
from featdisco.report import build_report
from tests.curation.conftest import (
    applied,
    clusters,
    config,
    edit,
    groups_of,
    transform_agrees,
    user_ids,
)
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import REWORD


def test_merge_joins_two_clusters_everywhere(run: Path, server: FakeOpenAIServer) -> None:
    a, b = user_ids(run)[:2]
    before = {c["cluster_id"]: c for c in clusters(run)}
    n = len(before)
    groups = groups_of(run)
    edit(run, "merge", str(a), str(b))
    after = clusters(run)
    assert len(after) == n - 1
    merged = next(c for c in after if c["cluster_id"] == a)
    assert merged["size"] >= max(before[a]["size"], before[b]["size"])
    assert set(groups_of(run)[a]) == set(groups[a]) | set(groups[b])  # both planted groups, one cluster
    assert merged["label"].startswith("Cluster about")  # named again from its members
    # the ids stay 0..n-1, the other kinds untouched; the analyses read the merged partition
    assert [c["cluster_id"] for c in after] == list(range(n - 1))
    act = load_activations(run)
    assert act.piece_matrix.shape[1] == n - 1
    assert transform_agrees(run)
    assert applied(run)[0]["status"] == "applied" and applied(run)[0]["now"] == [a]
    # a rerun with nothing new changes nothing and calls nothing
    calls = server.total
    result = Pipeline(run, config(server)).run()
    assert all(t.skipped for t in result.stages) and server.total == calls


def test_split_makes_k_named_clusters_of_its_members(run: Path) -> None:
    a, n, n_user = user_ids(run)[0], len(clusters(run)), len(user_ids(run))
    size = next(c["size"] for c in clusters(run) if c["cluster_id"] == a)
    edit(run, "split", str(a), "--k", "2")
    after = clusters(run)
    assert len(after) == n + 1
    assert applied(run)[0]["now"] == [a, a + 1]
    parts = [c for c in after if c["cluster_id"] in (a, a + 1)]
    assert sum(c["size"] for c in parts) == size and all(c["size"] > 0 for c in parts)
    assert all(c["label"] and c["kind"] == "user" for c in parts)
    centroids = __import__("numpy").load(run / "centroids_user.npy")
    assert centroids.shape[0] == n_user + 1  # transform can assign to either part
    assert transform_agrees(run)


def test_rename_and_hide_reach_the_cluster_table_and_the_report(run: Path) -> None:
    a, b = user_ids(run)[:2]
    auto = next(c["label"] for c in clusters(run) if c["cluster_id"] == a)
    edit(run, "rename", str(a), "Questions about   everyday life")
    edit(run, "hide", str(b))
    table = {c["cluster_id"]: c for c in clusters(run)}
    assert table[a]["label"] == "Questions about everyday life" and table[a]["auto_label"] == auto
    assert table[b]["hidden"] and not table[a]["hidden"]
    build_report(run)
    raw = (run / "report" / "data" / "k" / "user.js").read_text()
    assert "Questions about everyday life" in raw
    listed = orjson.loads(raw[raw.index(",") + 1:raw.rindex(")")])
    assert b not in [r[0] for r in listed]  # hidden: not listed
    overview = (run / "report" / "data" / "overview.js").read_text()
    assert '"curation"' in overview and "rename" in overview
    for extra in ([], ["--show-private"]):  # hiding is the researcher's decision: --show-private keeps it
        res = CliRunner().invoke(app, ["frequency", str(run), "--json", *extra])
        assert res.exit_code == 0, res.output
        ids = [orjson.loads(line)["cluster_id"] for line in res.stdout.splitlines() if line.startswith("{")]
        assert a in ids and b not in ids


def test_an_edit_survives_a_rerun_that_reclusters(run: Path, server: FakeOpenAIServer, inputs: Path) -> None:
    """A new seed reruns k-means (ids may move); the merge is found again by its members."""
    a, b = user_ids(run)[:2]
    n_user = len(user_ids(run))
    wanted = set(groups_of(run)[a]) | set(groups_of(run)[b])
    edit(run, "merge", str(a), str(b))
    result = Pipeline(run, config(server, seed=7)).run([inputs])
    assert "cluster" in [t.name for t in result.stages if not t.skipped]
    assert result.complete
    assert applied(run)[0]["status"] == "applied"
    user = [c for c in clusters(run) if c["kind"] == "user"]
    assert len(user) == n_user - 1
    groups = groups_of(run)
    assert any(set(groups[c["cluster_id"]]) == wanted for c in user)


def test_a_stale_edit_is_reported_not_dropped(run: Path, server: FakeOpenAIServer, inputs: Path,
                                              tmp_path: Path) -> None:
    """Every feature reworded: the renamed cluster's features are gone, so the rename is
    stale — kept in curation.json, counted in the summary, listed by `edit list` and in
    the report — and no other cluster takes the label."""
    a = user_ids(run)[0]
    edit(run, "rename", str(a), "My label")
    prompt = featdisco.prompts.load_prompt("featurize")
    mine = tmp_path / "reword.txt"
    mine.write_text(prompt.text.replace("### user", f"{REWORD}\n\n### user"))
    result = Pipeline(run, config(server, prompt_files={"featurize": str(mine)})).run([inputs])
    curate = next(t for t in result.stages if t.name == "curate")
    assert curate.counts == {"edits": 1, "applied": 0, "stale": 1}
    assert applied(run)[0]["status"] == "stale" and "My label" not in json.dumps(clusters(run))
    assert "are in this run any more" in applied(run)[0]["reason"]
    assert len(orjson.loads((run / "curation.json").read_bytes())["edits"]) == 1
    listed = CliRunner().invoke(app, ["edit", str(run), "list"])
    assert "stale" in listed.output and "rename" in listed.output
    build_report(run)
    assert "stale" in (run / "report" / "data" / "overview.js").read_text()


def test_bad_edits_are_refused_with_the_reason(run: Path) -> None:
    user, thought = user_ids(run)[0], next(c["cluster_id"] for c in clusters(run) if c["kind"] == "thought")
    for args, msg in ((["merge", str(user), str(thought)], "one kind"),
                      (["merge", str(user), "999"], "no cluster 999"),
                      (["merge", str(user)], "two or more"),
                      (["rename", str(user), "  "], "non-empty label"),
                      (["split", str(user), "--k", "100000"], "too few")):
        result = CliRunner().invoke(app, ["edit", str(run), *args])
        assert result.exit_code != 0 and msg in str(result.exception), (args, result.output)
    assert not (run / "curation.json").exists()
    (run / "curation.json").write_text('{"edits": [{"op": "fold", "clusters": []}]}')
    broken = CliRunner().invoke(app, ["edit", str(run), "list"])
    assert "curation.json: edit 1" in str(broken.exception)
