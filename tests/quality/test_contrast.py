"""Contrastive naming (issue 15 item 2): with ``name_contrast`` the namer also sees members of
the nearest other clusters, never the cluster's own, and a name prompt without ``$contrast``
is refused before any call."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import featdisco.prompts
from featdisco.errors import FeatdiscoError
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.quality.harness import handler, planted_runner

SEEN: list[str] = []


def recording(req: FakeRequest) -> Reply:
    text = req.body["messages"][-1]["content"]
    if "sampled at random from one cluster" in text:
        SEEN.append(text)
    return handler(req)


HANDLER, N = recording, 120  # what the server and data fixtures use (tests/quality/conftest.py)


def test_the_namer_sees_the_nearest_clusters_members_apart_from_its_own(server: FakeOpenAIServer, data: Path,
                                                                         tmp_path: Path) -> None:
    SEEN.clear()
    assert planted_runner(server.base_url, tmp_path / "plain", data, n_clusters=8).complete
    assert SEEN and not any("For contrast" in t for t in SEEN)  # off by default
    SEEN.clear()
    assert planted_runner(server.base_url, tmp_path / "run", data, n_clusters=8, name_contrast=2).complete
    assert len(SEEN) == 16  # one naming call per cluster, every one with its neighbours' members
    labels = pq.read_table(tmp_path / "run" / "raw_labels.parquet").to_pylist()
    for text in SEEN:
        own_part, contrast = text.split("For contrast", 1)
        own = {line[2:] for line in own_part.splitlines() if line.startswith("- ")}
        others = {line[2:] for line in contrast.split("\nWrite:")[0].splitlines() if line.startswith("- ")}
        assert 0 < len(others) <= 10 and not own & others
    sampled = {tuple(sorted(r["sample"])) for r in labels}
    assert len(sampled) == 16


def test_a_name_prompt_without_contrast_is_refused_before_any_call(server: FakeOpenAIServer, data: Path,
                                                                    tmp_path: Path) -> None:
    old = featdisco.prompts.load_prompt("name").text.replace("$contrast", "")
    mine = tmp_path / "name.txt"
    mine.write_text(old)
    run = tmp_path / "run"
    assert planted_runner(server.base_url, run, data, n_clusters=8).complete
    before = server.total
    with pytest.raises(FeatdiscoError, match=re.escape("needs $contrast")):
        planted_runner(server.base_url, run, data, n_clusters=8, name_contrast=2,
                       prompt_files={"name": str(mine)})
    assert server.total == before
