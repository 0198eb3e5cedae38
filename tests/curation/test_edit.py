"""Curation end to end: `featdisco edit` on a real small run (fake LLM server, real MiniLM
embedder, faiss clustering), each edit kind, an edit surviving a rerun that reclusters, and
an edit whose clusters are gone being reported rather than dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from typer.testing import CliRunner

import featdisco
from featdisco.analysis.activations import cluster_frequency, load_activations
from featdisco.cli import app
from featdisco.dictionary import Dictionary
from featdisco.estimator import FeatureDiscovery
from featdisco.pipeline import Pipeline
from featdisco.report import build_report
from tests.curation.conftest import (
    applied,
    clusters,
    config,
    edit,
    groups_of,
    user_ids,
)
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import REWORD


def members_of(run: Path) -> dict[int, list[str]]:
    """Each cluster's features (feature ids), by cluster id."""
    fids = pq.read_table(run / "assignments.parquet", columns=["feature_id", "cluster_id"]).to_pylist()
    out: dict[int, list[str]] = {}
    for r in fids:
        out.setdefault(r["cluster_id"], []).append(r["feature_id"])
    return out


def test_merge_is_a_union_under_a_new_id_and_every_other_cluster_keeps_its_id(
        run: Path, server: FakeOpenAIServer) -> None:
    a, b = user_ids(run)[:2]
    before = {c["cluster_id"]: c for c in clusters(run)}
    n, new_id = len(before), max(before) + 1
    groups, owned = groups_of(run), members_of(run)
    edit(run, "merge", str(a), str(b))
    after = {c["cluster_id"]: c for c in clusters(run)}
    assert len(after) == n - 1
    # the merged cluster has an id never used before; a and b are retired into it
    assert set(after) == set(before) - {a, b} | {new_id}
    merged = after[new_id]
    now = members_of(run)
    assert sorted(now[new_id]) == sorted(owned[a] + owned[b])  # every feature of both, and no other
    assert merged["size"] == before[a]["size"] + before[b]["size"]
    assert set(groups_of(run)[new_id]) == set(groups[a]) | set(groups[b])  # both planted groups, one cluster
    assert merged["label"].startswith("Cluster about")  # named again from its members
    for cid in set(before) - {a, b}:  # nobody else moved or was renamed
        assert sorted(now[cid]) == sorted(owned[cid]) and after[cid]["label"] == before[cid]["label"], cid
    assert applied(run)[0]["status"] == "applied" and applied(run)[0]["now"] == [new_id]
    status = CliRunner().invoke(app, ["status", str(run), "--json"])
    retired = {r["id"]: r for r in json.loads(status.stdout)["cluster_ids"]["retired"]}
    assert set(retired) == {a, b} and all(r["into"] == [new_id] and r["why"] == "merge by edit 1"
                                          for r in retired.values())
    assert retired[a]["label"] == before[a]["label"]
    listed = CliRunner().invoke(app, ["edit", str(run), "list"]).output
    assert "retired cluster ids" in listed and str(new_id) in listed
    refused = CliRunner().invoke(app, ["edit", str(run), "hide", str(a)])
    assert f"{a} was retired into {new_id}" in str(refused.exception)
    # the analyses read the merged partition, by the stable ids
    act = load_activations(run)
    assert act.piece_matrix.shape[1] == new_id + 1 and act.piece_matrix[:, [a, b]].nnz == 0
    assert act.piece_matrix[:, new_id].nnz == merged["pieces"]
    freq = cluster_frequency(run, write=False)
    assert new_id in set(freq["cluster_id"]) and not {a, b} & set(freq["cluster_id"])
    found, _ = Dictionary.load(run).assign(["user"], np.load(run / "centroids_user.npy")[:1])
    assert found[0] in after  # transform sends new data to live ids
    names = FeatureDiscovery.load(run).get_feature_names_out()  # one per activation column
    assert len(names) == new_id + 1 and names[new_id] == merged["label"] and names[a] == f"retired cluster {a}"
    # a rerun with nothing new changes nothing and calls nothing
    calls = server.total
    result = Pipeline(run, config(server)).run()
    assert all(t.skipped for t in result.stages) and server.total == calls
    assert {c["cluster_id"] for c in clusters(run)} == set(after)


def test_split_retires_the_id_into_k_new_ones_of_its_members_only(run: Path) -> None:
    a, n, n_user = user_ids(run)[0], len(clusters(run)), len(user_ids(run))
    before = {c["cluster_id"]: c for c in clusters(run)}
    owned, new = members_of(run), max(before) + 1
    edit(run, "split", str(a), "--k", "2")
    after = {c["cluster_id"]: c for c in clusters(run)}
    assert len(after) == n + 1 and a not in after
    assert applied(run)[0]["now"] == [new, new + 1]
    now = members_of(run)
    assert sorted(now[new] + now[new + 1]) == sorted(owned[a]) and now[new] and now[new + 1]
    assert all(after[c]["label"] and after[c]["kind"] == "user" for c in (new, new + 1))
    for cid in set(before) - {a}:
        assert sorted(now[cid]) == sorted(owned[cid]), cid
    centroids = np.load(run / "centroids_user.npy")
    assert centroids.shape[0] == n_user + 1  # transform can assign to either part
    retired = orjson.loads((run / "cluster_ids.json").read_bytes())["ids"][str(a)]
    # both parts, the one that took most of its members first
    assert retired["status"] == "retired" and sorted(retired["into"]) == [new, new + 1]
    assert len(now[retired["into"][0]]) >= len(now[retired["into"][1]])


def test_a_new_id_is_never_a_reused_id_and_undoing_an_edit_brings_the_old_ids_back(run: Path) -> None:
    a, b, c = user_ids(run)[:3]
    start = {x["cluster_id"] for x in clusters(run)}
    edit(run, "merge", str(a), str(b))
    merged = max(start) + 1
    edit(run, "split", str(c), "--k", "2")
    ids = {x["cluster_id"] for x in clusters(run)}
    assert ids - start == {merged, merged + 1, merged + 2}  # each new cluster a fresh id
    edit(run, "drop", "2")  # the split undone: c is back under its own id
    edit(run, "drop", "1")  # and the merge: a and b too
    assert {x["cluster_id"] for x in clusters(run)} == start
    history = orjson.loads((run / "cluster_ids.json").read_bytes())
    assert history["next_id"] == merged + 3
    assert {int(i) for i, r in history["ids"].items() if r["status"] == "retired"} == {merged, merged + 1, merged + 2}


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
    merged = applied(run)[0]["now"][0]
    owned = members_of(run)
    result = Pipeline(run, config(server, seed=7)).run([inputs])
    assert "cluster" in [t.name for t in result.stages if not t.skipped]
    assert result.complete
    assert applied(run)[0]["status"] == "applied"
    user = [c for c in clusters(run) if c["kind"] == "user"]
    assert len(user) == n_user - 1
    groups = groups_of(run)
    assert set(groups[merged]) == wanted  # the merged cluster, found again, keeps its id
    assert_found_again_keep_their_ids(owned, members_of(run))


def assert_found_again_keep_their_ids(before: dict[int, list[str]], after: dict[int, list[str]]) -> None:
    """Every cluster the new k-means found again (nine tenths of its features the same)
    has its old id; a cluster it did not find again (k-means may cut a kind with fewer
    planted groups than K elsewhere under another seed or other vectors) has a new one."""
    found = 0
    for cid, feats in after.items():
        for old, old_feats in before.items():
            a, b = set(feats), set(old_feats)
            if len(a & b) >= 0.9 * len(a | b):
                assert cid == old, (cid, old)
                found += 1
    assert found >= len(after) // 2  # most of them: the test would say nothing otherwise


def test_an_edit_follows_its_cluster_through_a_reworded_prompt(run: Path, server: FakeOpenAIServer,
                                                               inputs: Path, tmp_path: Path) -> None:
    """Every feature reworded: no text of the renamed cluster is left, but each cluster holds
    the same pieces, so every id is kept and the rename still applies to its cluster."""
    a = user_ids(run)[0]
    edit(run, "rename", str(a), "My label")
    owned = members_of(run)  # feature ids (piece and position) stay when the words change
    prompt = featdisco.prompts.load_prompt("featurize")
    mine = tmp_path / "reword.txt"
    mine.write_text(prompt.text.replace("### user", f"{REWORD}\n\n### user"))
    result = Pipeline(run, config(server, prompt_files={"featurize": str(mine)})).run([inputs])
    curate = next(t for t in result.stages if t.name == "curate")
    assert {k: curate.counts[k] for k in ("edits", "applied", "stale")} == {"edits": 1, "applied": 1, "stale": 0}
    assert pq.read_table(run / "features.parquet", columns=["text"]).column(0)[0].as_py().endswith("in new words")
    assert sorted(members_of(run)[a]) == sorted(owned[a])  # the renamed cluster, found again
    assert_found_again_keep_their_ids(owned, members_of(run))
    assert {c["cluster_id"]: c["label"] for c in clusters(run)}[a] == "My label"



def test_a_stale_edit_is_reported_not_dropped(run: Path, server: FakeOpenAIServer) -> None:
    """An edit whose cluster cannot be found (here: made for another run, none of its
    features here and its id never used here) is stale — kept in curation.json, counted in
    the summary, listed by `edit list` and in the report — and no cluster takes the label."""
    a = user_ids(run)[0]
    edit(run, "rename", str(a), "My label")
    data = orjson.loads((run / "curation.json").read_bytes())
    data["edits"][0]["clusters"][0].update(id=999, members=["A feature of another run"])
    (run / "curation.json").write_bytes(orjson.dumps(data))
    result = Pipeline(run, config(server)).run()
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


def test_an_edit_runs_every_stage_after_embedding_the_merge_stage_included(run: Path) -> None:
    """`edit` reruns the pipeline's own stages after embedding: on a run stopped before its
    merge stage finished, the edit finishes it instead of failing on its missing output."""
    a = user_ids(run)[0]
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    del manifest["stages"]["merge"]
    (run / "manifest.json").write_bytes(orjson.dumps(manifest))
    for out in run.glob("merged_*"):
        out.unlink()
    edit(run, "rename", str(a), "Named by hand")
    assert (run / "merged_clusters.parquet").exists()
    assert {c["cluster_id"]: c["label"] for c in clusters(run)}[a] == "Named by hand"


def test_validate_names_where_a_merged_away_cluster_went(run: Path, server: FakeOpenAIServer,
                                                         tmp_path: Path) -> None:
    """A label file written before `edit merge` names ids the merge retired: validate says
    which cluster they went into, as `edit` does, not that the run never had them."""
    a, b = user_ids(run)[:2]
    new_id = max(c["cluster_id"] for c in clusters(run)) + 1
    piece = pq.read_table(run / "pieces.parquet", columns=["piece_id", "kind"]).to_pylist()
    user_piece = next(p["piece_id"] for p in piece if p["kind"] == "user")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"piece_id,target,label\n{user_piece},cluster:user:{a},true\n")
    edit(run, "merge", str(a), str(b))
    refused = CliRunner().invoke(app, ["validate", str(run), str(labels)])
    assert f"line 2: unknown target 'cluster:user:{a}': cluster {a} was retired into cluster:user:{new_id}" \
        in str(refused.exception), refused.output


def test_retired_ids_are_not_counted_or_shown_as_clusters(run: Path, server: FakeOpenAIServer) -> None:
    """After `edit merge` the activation matrices keep an empty column per retired id; `ask`
    showed its planner "cluster 3 [nan] retired cluster 3: 0 pieces" and counted 7 clusters of
    5, and transform said "activate at least one of 7 clusters"."""
    from featdisco.evidence.ask import build_context

    a, b = user_ids(run)[:2]
    edit(run, "merge", str(a), str(b))
    live = len(clusters(run))
    assert load_activations(run).n_clusters == live
    ctx = build_context(run)
    assert ctx.n_clusters == live
    shown = [line for line in ctx.dictionary.splitlines() if line.startswith("- cluster ")]
    assert len(shown) == live and "nan" not in ctx.dictionary and "retired" not in ctx.dictionary


def test_a_retired_id_labelled_with_the_wrong_kind_is_pointed_at_a_target_that_exists() -> None:
    """A label `cluster:user:3` for a response cluster the merge retired into 6 was told it
    went "into cluster:user:6", a target validate then refuses (6 is a response cluster)."""
    from featdisco.evidence.validate import Label, _target_problem

    said = _target_problem(Label(2, "c0:0:user", "cluster:user:3", True), "user", [], {6: "response"}, {3: [6]})
    assert said == "unknown target 'cluster:user:3': cluster 3 was retired into cluster:response:6"


def test_an_edit_no_run_has_applied_is_said_to_be_pending_with_a_command_that_applies_it(
        run: Path, server: FakeOpenAIServer) -> None:
    """After `edit --no-apply` (or an edit whose rerun was interrupted) the clusters, analyses and
    report are from before the edit: status said nothing, the report's list of edits left it out
    (as if every edit were in the clusters shown), and the advice `featdisco run RUN` read the run
    directory as transcripts instead of rerunning it."""
    a, b = user_ids(run)[:2]
    recorded = CliRunner().invoke(app, ["edit", "--no-apply", str(run), "merge", str(a), str(b)])
    assert recorded.exit_code == 0, recorded.output
    command = f"featdisco run --run-dir {run}"
    assert f"not applied yet: `{command}`" in recorded.output
    status = CliRunner().invoke(app, ["status", str(run)])
    assert f"edit 1 (merge {a} {b}) is not applied yet: the clusters, analyses and report do not show it; " \
           f"`{command}` applies it" in status.output, status.output
    pending = json.loads(CliRunner().invoke(app, ["status", str(run), "--json"]).stdout)["pending_edits"]
    assert [(p["index"], p["edit"], p["status"]) for p in pending] == [(1, f"merge {a} {b}", "not applied yet")]
    build_report(run)
    raw = (run / "report" / "data" / "overview.js").read_text()
    edits = orjson.loads(raw[raw.index(",") + 1:raw.rindex(")")])["curation"]["edits"]
    assert [(e["edit"], e["status"]) for e in edits] == [(f"merge {a} {b}", "not applied yet")]
    applied = CliRunner().invoke(app, command.split()[1:])
    assert applied.exit_code == 0, applied.output
    assert a not in user_ids(run) and b not in user_ids(run)
    after = json.loads(CliRunner().invoke(app, ["status", str(run), "--json"]).stdout)
    assert after["pending_edits"] == [] and "not applied yet" not in CliRunner().invoke(app, ["status", str(run)]).output


def test_the_same_edit_again_after_an_interrupted_rerun_applies_it_once(run: Path) -> None:
    """Ctrl-C during `edit RUN split X` leaves the split recorded but not applied, and says
    "rerunning the same command resumes". Rerunning it used to record the split a second time,
    stale at once (cluster X was split by the first) and listed as such ever after."""
    cid = user_ids(run)[0]
    recorded = CliRunner().invoke(app, ["edit", "--no-apply", str(run), "split", str(cid), "--k", "2"])
    assert recorded.exit_code == 0, recorded.output  # the state Ctrl-C leaves: recorded, pending
    again = CliRunner().invoke(app, ["edit", str(run), "split", str(cid), "--k", "2"])
    assert again.exit_code == 0, again.output
    assert f"edit 1 (split {cid} --k 2) is recorded already and not applied yet: applying it" in again.output
    listed = CliRunner().invoke(app, ["edit", str(run), "list"]).output
    assert "stale" not in listed and "applied" in listed, listed
    assert cid not in user_ids(run)
    assert len(json.loads((run / "curation.json").read_text())["edits"]) == 1
