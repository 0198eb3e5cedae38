"""Stored analyses after an edit, on a real small run: a rename leaves an analysis of
cluster membership (compare, cooccur) current and every view shows the new name beside its
numbers; an edit that moves features (merge) makes it stale; an analysis that depends on the
names themselves (a cluster's scan asks the question its label makes) is stale after a
rename too."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from typer.testing import CliRunner

from featdisco.analysis.provenance import SECTION, clusters_fingerprint
from featdisco.cli import app
from featdisco.report import build_report
from featdisco.rundir import RunDir
from tests.curation.conftest import analyses, cli, edit, user_ids
from tests.fakes.openai_server import FakeOpenAIServer

NEW = "Renamed by the researcher"


def shard(run: Path, name: str) -> dict[str, Any]:
    """What the report's page for analysis ``name`` shows."""
    raw = (run / "report" / "data" / "a" / f"{name}.js").read_text()
    return orjson.loads(raw[raw.index(",") + 1:raw.rindex(")")])


def compared_cluster(run: Path) -> tuple[int, str]:
    """A cluster in the stored comparison, and its label there."""
    row = pq.read_table(run / "analysis_compare_model.parquet", columns=["cluster_id", "label"]).to_pylist()[0]
    return row["cluster_id"], row["label"]


def test_a_rename_keeps_a_membership_analysis_current_and_shows_the_new_name(run: Path) -> None:
    cli("compare", str(run), "--by", "model")
    cli("cooccur", str(run), "--min-support", "1")
    cli("probe", str(run), "--jobs", "1", "--min-positives", "2")
    before = analyses(run)
    assert before["compare_model"]["current"] and before["cooccurrence"]["current"] and before["probes"]["current"]
    # an entry an older featdisco wrote: the clusters' whole fingerprint, names included
    shutil.copy(run / "analysis_compare_model.parquet", run / "analysis_legacy_compare.parquet")
    legacy = {**RunDir(run).manifest[SECTION]["compare_model"], "depends": "clusters",
              "files": ["analysis_legacy_compare.parquet"], "fingerprint": clusters_fingerprint(RunDir(run))}
    RunDir(run).merge(SECTION, {"legacy_compare": legacy})
    assert analyses(run)["legacy_compare"]["current"]
    cid, old = compared_cluster(run)
    numbers = pq.read_table(run / "analysis_compare_model.parquet").drop_columns(["label"])
    user = pq.read_table(run / "analysis_probes.parquet").column("top_user_clusters").to_pylist()[0][0]

    edit(run, "rename", str(cid), NEW)
    edit(run, "rename", str(user), "A user cluster renamed")
    after = analyses(run)
    assert after["compare_model"]["current"] is True  # the numbers did not change: no reason to recompute
    assert after["cooccurrence"]["current"] is True and after["probes"]["current"] is True
    assert after["compare_model"]["depends"] == "members"
    assert after["legacy_compare"]["current"] is False  # written before: stale once, never current by mistake
    assert "stale analysis compare_model" not in cli("status", str(run))
    assert pq.read_table(run / "analysis_compare_model.parquet").drop_columns(["label"]).equals(numbers)

    build_report(run)
    page = shard(run, "compare_model")
    assert page["stale"] is False
    shown = dict(zip(page["columns"]["cluster_id"], page["columns"]["label"], strict=True))
    assert shown[cid] == NEW  # the name now, never the old one
    pairs = shard(run, "cooccurrence")["columns"]
    sides = [(a, la) for a, la in zip(pairs["cluster_a"], pairs["label_a"], strict=True)] + \
        [(b, lb) for b, lb in zip(pairs["cluster_b"], pairs["label_b"], strict=True)]
    assert (cid, NEW) in sides and (cid, old) not in sides
    probes = shard(run, "probes")["columns"]  # a list of user clusters beside the list of their labels
    drivers = [pair for ids, labels in zip(probes["top_user_clusters"], probes["top_user_labels"], strict=True)
               for pair in zip(ids, labels, strict=True)]
    assert (user, "A user cluster renamed") in drivers and all(lab == "A user cluster renamed"
                                                               for c, lab in drivers if c == user)
    legacy_page = shard(run, "legacy_compare")  # stale, so shown as stored, with the warning
    assert legacy_page["stale"] is True
    assert dict(zip(legacy_page["columns"]["cluster_id"], legacy_page["columns"]["label"], strict=True))[cid] == old


def test_a_merge_makes_a_membership_analysis_stale(run: Path) -> None:
    cli("compare", str(run), "--by", "model")
    edit(run, "rename", str(compared_cluster(run)[0]), NEW)
    assert analyses(run)["compare_model"]["current"] is True
    a, b = user_ids(run)[:2]
    edit(run, "merge", str(a), str(b))
    found = analyses(run)["compare_model"]
    assert found["current"] is False  # features changed cluster: the numbers are old
    assert f"stale analysis compare_model (computed on other clusters); refresh: {found['command']}" \
        in cli("status", str(run))
    build_report(run)
    assert shard(run, "compare_model")["stale"] is True


def test_a_rename_makes_an_analysis_of_the_names_stale(run: Path, server: FakeOpenAIServer) -> None:
    cid = user_ids(run)[0]
    cli("scan", str(run), "--cluster", str(cid), "--llm", "openai", "--base-url", server.base_url,
        "--model", "fake-rater", "-q")
    cli("compare", str(run), "--by", "model")
    assert analyses(run)[f"scan_cluster_{cid}"]["current"] is True
    edit(run, "rename", str(cid), NEW)
    found = analyses(run)
    scan = found[f"scan_cluster_{cid}"]
    assert scan["current"] is False  # it asked the old name's question
    assert found["compare_model"]["current"] is True
    assert scan["depends"] == "labels"
    assert f"stale analysis scan_cluster_{cid} (computed on other clusters or cluster names)" in cli("status", str(run))


def test_reclustering_into_the_same_clusters_leaves_analyses_current(run: Path, server: FakeOpenAIServer) -> None:
    """`run --clusters N` whose k-means and merge end in the very same clusters (each feature in
    the cluster it was in, same ids and names) rewrites the assignments and the cluster table
    with other similarities only (the centroids moved). Every stored analysis was then said to be
    'computed on other clusters', and refreshing a cluster's scan cost LLM calls for nothing."""
    cid = user_ids(run)[0]
    cli("scan", str(run), "--cluster", str(cid), "--llm", "openai", "--base-url", server.base_url,
        "--model", "fake-rater", "-q")
    cli("compare", str(run), "--by", "model")
    assignments, clusters = pq.read_table(run / "assignments.parquet"), pq.read_table(run / "clusters.parquet")

    def moved_centroids(table: pa.Table, column: str) -> pa.Table:
        shifted = pc.multiply(table.column(column), pa.scalar(0.97, table.schema.field(column).type))
        return table.set_column(table.schema.get_field_index(column), column, shifted)

    pq.write_table(moved_centroids(assignments, "similarity"), run / "assignments.parquet")
    pq.write_table(moved_centroids(clusters, "min_similarity"), run / "clusters.parquet")
    found = analyses(run)
    assert found["compare_model"]["current"] is True and found[f"scan_cluster_{cid}"]["current"] is True
    assert "stale analysis" not in cli("status", str(run))
    # one feature in another cluster: the members changed, so both are stale
    ids = assignments.column("cluster_id").to_pylist()
    other = next(c for c in user_ids(run) if c != ids[0])
    pq.write_table(assignments.set_column(assignments.schema.get_field_index("cluster_id"), "cluster_id",
                                          pa.array([other, *ids[1:]], assignments.schema.field("cluster_id").type)),
                   run / "assignments.parquet")
    found = analyses(run)
    assert found["compare_model"]["current"] is False and found[f"scan_cluster_{cid}"]["current"] is False


def test_a_copied_run_is_told_to_refresh_its_analyses_in_itself(run: Path, tmp_path: Path) -> None:
    """The refresh command was recorded with the run's path at the time: in a copy of the run,
    status and the report told the user to run `featdisco compare ORIGINAL ...`, which writes
    into the original and leaves the copy stale."""
    cli("compare", str(run), "--by", "model")
    a, b = user_ids(run)[:2]
    edit(run, "merge", str(a), str(b))  # the comparison is stale now
    copy = tmp_path / "copy of the run"
    shutil.copytree(run, copy)
    found = analyses(copy)["compare_model"]
    assert found["current"] is False
    assert found["command"] == f"featdisco compare '{copy}' --by model --unit piece --min-count 1 --alpha 0.05"
    assert f"refresh: {found['command']}" in cli("status", str(copy))
    build_report(copy)
    assert shard(copy, "compare_model")["refresh"] == found["command"]
    CliRunner().invoke(app, shlex.split(found["command"])[1:])  # the refresh works on the copy, not the original
    assert analyses(copy)["compare_model"]["current"] is True and analyses(run)["compare_model"]["current"] is False


def test_a_scan_of_a_cluster_that_is_gone_says_where_it_went_and_which_ids_there_are(run: Path) -> None:
    """`scan --cluster ID` for an id an edit retired said "(ids 0..N-1)": stable ids have gaps,
    so that named ids that do not exist and left out live ones, and not where the cluster went."""
    a, b = user_ids(run)[:2]
    edit(run, "merge", str(a), str(b))
    live = sorted(pq.read_table(run / "clusters.parquet", columns=["cluster_id"]).column(0).to_pylist())
    merged = max(live)
    assert live != list(range(len(live)))  # the ids have a gap where a and b were
    for gone, said in [(a, f"it was retired into {merged}"), (merged + 50, f"its ids are {', '.join(map(str, live))}")]:
        result = CliRunner().invoke(app, ["scan", str(run), "--cluster", str(gone)])
        assert result.exit_code != 0 and said in str(result.exception), (result.output, result.exception)
        assert "0.." not in str(result.exception)
