"""FeatureDiscovery is a scikit-learn estimator for real: clone, params, NotFittedError,
no temporary folder left behind, and one activation path for fit_transform and transform."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from featdisco.errors import FeatdiscoError
from featdisco.estimator import FeatureDiscovery
from tests.conftest import write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import pipeline_handler


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


def _data(folder: Path) -> Path:
    return write_jsonl(folder / "t.jsonl", [
        {"id": f"t{i}", "model": "m", "messages": [
            {"role": "user", "content": f"Request {i} about subject {i * 3}"},
            {"role": "assistant", "content": f"<think>Reasoning {i} on {i * 5}</think>Answer {i} here."}]}
        for i in range(12)])


def test_clone_and_params_follow_the_scikit_learn_contract() -> None:
    est = FeatureDiscovery(n_clusters=5, prompts={"featurize": "mine.txt"})
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    assert est.get_params()["n_clusters"] == 5 and "run_dir" in est.get_params()
    assert est.set_params(seed=3, max_features=12) is est and est.seed == 3 and est.max_features == 12
    # parameters are stored as given and checked by fit, not __init__
    bad = FeatureDiscovery(min_features=30, max_features=10)
    assert bad.min_features == 30
    with pytest.raises(FeatdiscoError, match="min_features"):
        bad.fit([])
    with pytest.raises(NotFittedError):
        FeatureDiscovery().transform([])
    with pytest.raises(TypeError):
        FeatureDiscovery("openai")  # type: ignore[misc]  # keyword-only


def test_fit_without_a_run_dir_leaves_nothing_behind_and_transform_agrees_with_fit(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = _data(tmp_path)
    tmp_root = Path(tempfile.gettempdir())
    before = {p.name for p in tmp_root.glob("featdisco-*")}
    est = FeatureDiscovery(llm="openai", model="fake-rater", base_url=server.base_url, n_clusters=3,
                           concurrency=4)
    act = est.fit_transform(data)
    assert {p.name for p in tmp_root.glob("featdisco-*")} == before  # no temporary run left
    names = est.get_feature_names_out()
    assert len(names) == act.matrix.shape[1] == est.clusters_.num_rows
    assert all(n.startswith("Cluster about") for n in names)
    again = est.transform(data)  # the same transcripts through the encoder
    assert {p.name for p in tmp_root.glob("featdisco-*")} == before
    assert again.features is not None and act.features is not None
    fit_of = dict(zip(act.features.column("feature_id").to_pylist(),
                      act.features.column("cluster_id").to_pylist(), strict=True))
    assert [fit_of[f] for f in again.features.column("feature_id").to_pylist()] == \
        again.features.column("cluster_id").to_pylist()
    np.testing.assert_array_equal(again.matrix.toarray(), act.matrix.toarray())
    saved = est.save(tmp_path / "dict")
    assert FeatureDiscovery.load(saved).clusters_.equals(est.clusters_)
