"""Hidden clusters in the analyses, on a real small run: a cluster hidden with `featdisco edit
RUN hide ID` is neither tested nor counted in the Benjamini–Hochberg correction of compare,
cooccur and probe, each says how many it left out (printed, in the stored table's metadata and
in its manifest entry), and hiding makes stale exactly the analyses whose numbers depend on
which clusters are hidden: showing the cluster again makes them current again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from featdisco.analysis.stats import benjamini_hochberg
from tests.curation.conftest import analyses, cli, clusters, edit


def compared(run: Path) -> dict[int, float]:
    t = pq.read_table(run / "analysis_compare_model.parquet", columns=["cluster_id", "p_value"])
    return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))


def test_compare_leaves_a_hidden_cluster_out_of_its_tests_and_says_how_many(run: Path) -> None:
    """compare printed "6 clusters compared" and corrected 6 p-values after one of the 6 was
    hidden: the hidden cluster's test was counted in every other cluster's q-value."""
    cli("compare", str(run), "--by", "model")
    before = compared(run)
    user = {c["cluster_id"] for c in clusters(run) if c["kind"] == "user"}
    gone = next(c for c in before if c in user)
    edit(run, "hide", str(gone))
    printed = cli("compare", str(run), "--by", "model")
    assert f"{len(before) - 1:,} clusters compared by 'model'" in printed
    assert "1 hidden cluster left out: not tested, not counted in the correction" in printed
    after = compared(run)
    assert gone not in after and set(after) == set(before) - {gone}
    stored = pq.read_table(run / "analysis_compare_model.parquet")
    p, q = (stored.column(c).to_numpy() for c in ("p_value", "q_value"))
    assert np.allclose(q, benjamini_hochberg(p))  # corrected over the clusters shown, not the hidden one too
    assert gone not in pq.read_table(run / "analysis_compare_model_rates.parquet").column("cluster_id").to_pylist()
    assert stored.schema.metadata[b"hidden_clusters_left_out"].decode().startswith(f"1 (ids {gone})")
    assert analyses(run)["compare_model"]["hidden"] == [gone]

    found = cli("cooccur", str(run), "--min-support", "1")
    assert "1 hidden cluster left out" in found
    pairs = pq.read_table(run / "analysis_cooccurrence.parquet", columns=["cluster_a", "cluster_b"]).to_pydict()
    assert gone not in pairs["cluster_a"] + pairs["cluster_b"]
    assert analyses(run)["cooccurrence"]["hidden"] == [gone]

    cli("probe", str(run), "--jobs", "1", "--min-positives", "2")
    targets = pq.read_table(run / "analysis_probes.parquet", columns=["cluster_id"]).column(0).to_pylist()
    target = targets[0]
    edit(run, "hide", str(target))
    probed = cli("probe", str(run), "--jobs", "1", "--min-positives", "2")
    assert "1 hidden cluster left out: not probed as targets" in probed  # the hidden user cluster stays an input
    assert sorted(pq.read_table(run / "analysis_probes.parquet", columns=["cluster_id"]).column(0).to_pylist()) \
        == sorted(set(targets) - {target})
    assert analyses(run)["probes"]["hidden"] == [target]


def test_hiding_makes_stale_exactly_what_depends_on_it_and_showing_again_restores_it(run: Path) -> None:
    """A hide made every membership analysis stale (frequency too, whose numbers do not
    change), and said "computed on other clusters", though no feature moved."""
    cli("compare", str(run), "--by", "model")
    cli("frequency", str(run))
    cli("probe", str(run), "--jobs", "1", "--min-positives", "2")
    user = next(c["cluster_id"] for c in clusters(run) if c["kind"] == "user")
    edit(run, "hide", str(user))
    found = analyses(run)
    assert found["compare_model"]["current"] is False  # it tested the cluster now hidden
    assert found["frequency"]["current"] is True  # counts do not depend on what is hidden
    assert found["probes"]["current"] is True  # a user cluster is an input, never a target
    status = cli("status", str(run))
    assert f"stale analysis compare_model (computed with no cluster hidden, cluster {user} now)" in status
    assert "stale analysis frequency" not in status and "stale analysis probes" not in status

    edit(run, "drop", "1")  # shown again: what was computed with nothing hidden is current again
    found = analyses(run)
    assert found["compare_model"]["current"] is True and found["frequency"]["current"] is True

    edit(run, "hide", str(user))
    cli("compare", str(run), "--by", "model")  # refreshed with the cluster hidden: current
    assert analyses(run)["compare_model"]["current"] is True
    edit(run, "drop", "1")
    found = analyses(run)["compare_model"]
    assert found["current"] is False and found["hidden"] == [user]
    assert f"(computed with cluster {user} hidden, no cluster now)" in cli("status", str(run))


def test_an_entry_from_before_hidden_clusters_were_left_out_is_stale_after_a_hide_only_if_it_tests_them(
        run: Path) -> None:
    """An older manifest's entries have no "hidden": every one of them was checked as "computed
    with none hidden", so after a hide frequency read as stale ("computed with no cluster
    hidden, cluster 3 now"), though its numbers do not depend on what is hidden."""
    import orjson

    cli("compare", str(run), "--by", "model")
    cli("frequency", str(run))
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    for entry in manifest["analyses"].values():  # as an older featdisco wrote them
        entry.pop("hidden", None)
        entry.pop("hidden_kinds", None)
    (run / "manifest.json").write_bytes(orjson.dumps(manifest))
    user = next(c["cluster_id"] for c in clusters(run) if c["kind"] == "user")
    edit(run, "hide", str(user))
    found = analyses(run)
    assert found["frequency"]["current"] is True
    assert found["compare_model"]["current"] is False  # it tested every cluster: the hidden one too
    assert "stale analysis frequency" not in cli("status", str(run))
