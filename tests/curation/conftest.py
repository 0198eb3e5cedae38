"""A small real run for curation tests (fake LLM server over HTTP, real MiniLM embedder and
faiss clustering), and helpers that edit it through the CLI and read it back."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.pipeline import Pipeline, PipelineConfig
from tests.conftest import copy_mt_bench, write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import GROUP_OF_FEATURE, fake_api_key, pipeline_handler, pipeline_server  # noqa: F401

K = 3


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    copy_mt_bench(root, shared_data, 6)
    write_jsonl(root / "reasoning.jsonl", [
        {"id": f"r{i}", "model": "thinker", "messages": [
            {"role": "user", "content": f"Question number {i} about topic {i * 7}"},
            {"role": "assistant", "content": f"<think>Let me think about topic {i * 7} step {i}.</think>Answer {i}."}]}
        for i in range(9)])
    return root


def config(server: FakeOpenAIServer, **kw: Any) -> PipelineConfig:
    # Edits act on the partition the merge stage leaves; with the automatic merge off that is
    # k-means' own K clusters per kind, so the counts below follow from K (tests/quality
    # covers the merge, tests/test_pipeline.py both stages together).
    return PipelineConfig(**{"llm": "openai", "model": "fake-rater", "base_url": server.base_url,
                             "n_clusters": K, "concurrency": 8, "merge": False, **kw})


@pytest.fixture(scope="session")
def fitted(server: FakeOpenAIServer, inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
    run = tmp_path_factory.mktemp("fitted") / "run"
    assert Pipeline(run, config(server)).run([inputs]).complete
    return run


@pytest.fixture()
def run(fitted: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(fitted, dest)
    return dest


def edit(run: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["edit", "-q", str(run), *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def cli(*args: str) -> str:
    """A featdisco command that must succeed: its output."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def analyses(run: Path) -> dict[str, dict[str, Any]]:
    """``status --json``'s analyses by name."""
    return {a["name"]: a for a in orjson.loads(cli("status", str(run), "--json"))["analyses"]}


def clusters(run: Path) -> list[dict[str, Any]]:
    return pq.read_table(run / "clusters.parquet").to_pylist()


def groups_of(run: Path) -> dict[int, Counter[str]]:
    """Each cluster's planted groups, counted over its features."""
    texts = pq.read_table(run / "features.parquet", columns=["text"]).column(0).to_pylist()
    cids = pq.read_table(run / "assignments.parquet", columns=["cluster_id"]).column(0).to_pylist()
    out: dict[int, Counter[str]] = {}
    for t, c in zip(texts, cids, strict=True):
        out.setdefault(c, Counter())[GROUP_OF_FEATURE[t.removesuffix(" in new words")]] += 1
    return out


def user_ids(run: Path) -> list[int]:
    return [c["cluster_id"] for c in clusters(run) if c["kind"] == "user"]


def applied(run: Path) -> list[dict[str, Any]]:
    return orjson.loads((run / "curation_applied.json").read_bytes())["edits"]
