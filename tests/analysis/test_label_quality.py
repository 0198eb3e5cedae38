"""Label scoring over real HTTP against the fake server: a scripted judge marks the items
whose planted group the label names, so the right label must score far above a wrong one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from featdisco.analysis.label_quality import score_labels
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import GROUP_NAMES, GROUP_OF_FEATURE, GROUPS


def judge(req: FakeRequest) -> Reply:
    user = req.body["messages"][-1]["content"]
    label = re.search(r"^Label: (.*)$", user, re.MULTILINE)
    items = re.findall(r"^(\d+)\. (.*)$", user, re.MULTILINE)
    if label is None or not items:
        return Reply(status=400, raw_body=b'{"error": {"message": "unexpected", "type": "bad"}}')
    named = next((g for g in GROUP_NAMES if g in label.group(1)), None)
    fits = [int(i) for i, text in items if GROUP_OF_FEATURE.get(text) == named]
    return Reply(content=json.dumps({"fits": fits}))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(judge) as srv:
        yield srv


def test_right_label_scores_far_above_a_wrong_one(server: FakeOpenAIServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    clusters = [("response", f"Cluster about {g}") for g in GROUP_NAMES]
    pieces = [PlantedPiece(f"t{i}", 1, "response", [i % 3]) for i in range(60)]
    words = {c: GROUPS[g] for c, g in enumerate(GROUP_NAMES)}
    cents = np.eye(3, 4)
    run = write_run(tmp_path / "run", pieces, clusters, centroids={"response": cents},
                    feature_text=lambda c, i: words[c][(i // 3) % len(words[c])])
    kw = {"llm": "openai", "model": "fake-judge", "base_url": server.base_url, "n_members": 8, "n_others": 8}
    right = score_labels(run, cluster_ids=[1], **kw).iloc[0]
    wrong = score_labels(run, cluster_ids=[1], labels={1: "Cluster about sadness"}, write=False, **kw).iloc[0]
    assert right["status"] == "ok" and right["members_shown"] == 8 and right["others_shown"] == 8
    assert right["precision"] == 1.0 and right["recall"] == 1.0
    assert wrong["f1"] < 0.2 and right["f1"] - wrong["f1"] > 0.7
    assert (run / "analysis_label_quality.parquet").exists()
    before = server.total
    again = score_labels(run, cluster_ids=[1], **kw).iloc[0]  # from the run's LLM cache
    assert server.total == before and again["f1"] == right["f1"]
