"""Issue 15 item 5: ``transform`` lists what is new in new data. A behaviour absent from the
fit (planted only in the new chats) comes back as a named candidate cluster; behaviours the
fit has are not listed, and the activations of known clusters are unchanged."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.estimator import FeatureDiscovery
from tests.fakes.openai_server import FakeOpenAIServer
from tests.quality.harness import BEHAVIOUR_OF, PLANTED, planted_runner, write_transcripts

KNOWN = {b for b, spec in PLANTED.items() if not spec.novel}


@pytest.fixture(scope="module")
def fitted(server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("fit")
    assert planted_runner(server.base_url, root / "run", write_transcripts(root / "fit.jsonl", 400)).complete
    return root / "run"


def transform(server: FakeOpenAIServer, fitted: Path, tmp: Path, novel: bool) -> tuple[str, Path]:
    data = write_transcripts(tmp / f"new-{novel}.jsonl", 250, seed=7, start=1500, novel=novel)
    out = tmp / f"out-{novel}"
    result = CliRunner().invoke(app, ["transform", str(fitted), str(data), "-o", str(out), "-q",
                                      "--base-url", server.base_url])
    assert result.exit_code == 0, result.output
    return result.output, out


def test_a_behaviour_absent_from_the_fit_is_listed_as_new(server: FakeOpenAIServer, fitted: Path,
                                                          tmp_path: Path) -> None:
    output, out = transform(server, fitted, tmp_path, novel=True)
    new = pq.read_table(out / "new_clusters.parquet").to_pandas()
    top = new.iloc[0]
    assert top["label"] == "Asks about space travel" and top["kind"] == "user"
    assert not set(new["label"]) & KNOWN  # nothing the fit has is called new
    # its features are marked unassigned and point at the new cluster
    feats = pq.read_table(out / "features.parquet", columns=["text"]).to_pandas()
    assign = pq.read_table(out / "assignments.parquet").to_pandas()
    space = feats["text"].map(BEHAVIOUR_OF) == "Asks about space travel"
    assert space.sum() > 100
    assert assign.loc[space, "unassigned"].mean() >= 0.95
    assert (assign.loc[space, "new_cluster"] == top["new_cluster"]).mean() >= 0.9
    assert top["size"] == (assign["new_cluster"] == top["new_cluster"]).sum()
    assert "new in this data" in output and "Asks about space travel" in output
    # known planted behaviours stay assigned to their fitted clusters
    known = feats["text"].map(BEHAVIOUR_OF).isin(KNOWN)
    assert assign.loc[known, "unassigned"].mean() < 0.05


def test_data_like_the_fit_lists_no_planted_behaviour(server: FakeOpenAIServer, fitted: Path,
                                                      tmp_path: Path) -> None:
    output, out = transform(server, fitted, tmp_path, novel=False)
    new = pq.read_table(out / "new_clusters.parquet").to_pandas()
    assert not set(new["label"]) & set(PLANTED)
    assert "Asks about space travel" not in output


def test_the_estimator_finds_the_new_clusters(server: FakeOpenAIServer, fitted: Path, tmp_path: Path) -> None:
    est = FeatureDiscovery.load(fitted)
    est.set_params(base_url=server.base_url)
    data = write_transcripts(tmp_path / "new.jsonl", 250, seed=7, start=1500, novel=True)
    est.config_.base_url = server.base_url
    new = est.find_new([data])
    assert new.iloc[0]["label"] == "Asks about space travel"
    assert not hasattr(est, "new_clusters_")  # found, not stored on the fitted estimator
    assert est.transform([data]).shape == (250, est.dictionary_.n_clusters)


def test_the_report_of_a_transform_has_a_new_in_this_data_section(server: FakeOpenAIServer, fitted: Path,
                                                                   tmp_path: Path) -> None:
    import json

    from featdisco.report.build import build_report

    _, out = transform(server, fitted, tmp_path, novel=True)
    build_report(out)
    text = (out / "report" / "data" / "overview.js").read_text()
    overview = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert overview["new_clusters"][0]["label"] == "Asks about space travel"
    assert overview["transcripts"] == 250  # the new data's, through the fitted dictionary
    sizes = pq.read_table(out / "clusters.parquet", columns=["size"]).column(0).to_pylist()
    assert sum(sizes) == pq.read_table(out / "features.parquet").num_rows


def test_a_kind_absent_from_the_fit_is_counted_unassigned_and_offered_as_new(
        server: FakeOpenAIServer, fitted: Path, tmp_path: Path) -> None:
    """The fit has no thoughts; new chats whose replies open with reasoning have. Every
    thought feature is unassigned (no cluster of its kind exists), counted as such, and
    offered in new clusters of kind thought with no nearest fitted cluster."""
    import json

    data = write_transcripts(tmp_path / "plain.jsonl", 60, seed=3, start=1500)
    marker = PLANTED["Asks about space travel"].marker
    chats = [json.loads(line) for line in data.read_text().splitlines()]
    for chat in chats:
        for m in chat["messages"]:
            if m["role"] == "assistant":
                m["content"] = f"<think>Let me consider what they need.{marker}</think>{m['content']}"
    thinking = tmp_path / "thinking.jsonl"
    thinking.write_text("".join(json.dumps(c) + "\n" for c in chats))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["transform", str(fitted), str(thinking), "-o", str(out), "-q",
                                      "--base-url", server.base_url])
    assert result.exit_code == 0, result.output
    assign = pq.read_table(out / "assignments.parquet").to_pandas()
    thought = assign["kind"] == "thought"
    assert thought.sum() > 100 and (assign.loc[thought, "cluster_id"] == -1).all()
    assert assign.loc[thought, "unassigned"].all()
    manifest = json.loads((out / "manifest.json").read_text())["new_in_this_data"]
    assert manifest["unassigned_features"] >= thought.sum()
    new = pq.read_table(out / "new_clusters.parquet").to_pandas()
    mine = new[new["kind"] == "thought"]
    assert "Asks about space travel" in set(mine["label"])
    assert (mine["nearest_cluster_id"] == -1).all() and mine["nearest_label"].isna().all()
    offered = assign.loc[thought, "new_cluster"]
    assert (offered >= 0).mean() > 0.5  # most thought features are in an offered cluster
