"""The Ray executor on a real local Ray (``ray.init(num_cpus=2)``): the same run as the
local executor, over the fake LLM server, must give identical features and clusters."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featdisco.llm.cache import CallCache
from featdisco.pipeline import Pipeline, PipelineConfig
from featdisco.rundir import LLM_CACHE
from tests.conftest import reasoning_chats, write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import pipeline_handler

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"  # workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


def data(root: Path) -> Path:
    write_jsonl(root / "t.jsonl", reasoning_chats(
        60, user=lambda i: f"Question {i} about subject {i * 13 % 17}",
        thought=lambda i: f"Reasoning step {i} on {i % 5}",
        answer=lambda i: f"Answer number {i} with detail {i * 3}.", prefix="t", model="m"))
    return root / "t.jsonl"


def run(server: FakeOpenAIServer, inputs: Path, run_dir: Path, executor: str) -> Pipeline:
    cfg = PipelineConfig(llm="openai", model="fake-rater", base_url=server.base_url,
                         n_clusters=3, concurrency=8, executor=executor)
    pipe = Pipeline(run_dir, cfg, progress="none")
    assert pipe.run([inputs]).complete
    return pipe


def test_ray_run_equals_local_run(cluster: None, server: FakeOpenAIServer, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import featdisco.executors.ray as ray_executor

    monkeypatch.setattr(ray_executor, "SHARD_REQUESTS", 16)  # several shards on two actors
    inputs = data(tmp_path)
    run(server, inputs, tmp_path / "local", "local")
    calls_local = sum(server.hits.values())
    server.hits.clear()
    run(server, inputs, tmp_path / "ray", "ray")
    # every call made again (a fresh cache), each exactly once
    assert sum(server.hits.values()) == calls_local and set(server.hits.values()) == {1}
    for name, cols in (("features.parquet", None), ("strings.parquet", None),
                       ("assignments.parquet", None), ("clusters.parquet", ["cluster_id", "label", "size"])):
        a = pq.read_table(tmp_path / "local" / name, columns=cols)
        b = pq.read_table(tmp_path / "ray" / name, columns=cols)
        assert a.equals(b), name
    ea = np.load(tmp_path / "local" / "embeddings.npy")
    eb = np.load(tmp_path / "ray" / "embeddings.npy")
    np.testing.assert_array_equal(ea, eb)
    # the driver wrote the Ray results into the run's cache, exactly as a local run does
    with CallCache(tmp_path / "ray" / LLM_CACHE) as c, CallCache(tmp_path / "local" / LLM_CACHE) as d:
        assert c.stats() == d.stats()
    # and a rerun on Ray finds everything cached: no call is sent
    server.hits.clear()
    (tmp_path / "ray" / "features.parquet").unlink()
    pipe = Pipeline(tmp_path / "ray", PipelineConfig(llm="openai", model="fake-rater",
                                                     base_url=server.base_url, n_clusters=3,
                                                     executor="ray"), progress="none")
    pipe.run(stages=("split", "featurize"))
    assert sum(server.hits.values()) == 0
    # Ray logs its runtime_env: the API key must not be in any file Ray wrote.
    session = Path("/tmp/ray/session_latest").resolve()
    leaked = [f for f in session.rglob("*") if f.is_file() and b"sk-test-not-a-real-key" in f.read_bytes()]
    assert not leaked, leaked
