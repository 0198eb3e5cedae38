"""Provider batch APIs against a fake that speaks both protocols over HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from featdisco.llm.anthropic import AnthropicLLM
from featdisco.llm.base import ChatMessage, LLMRequest, Sampling
from featdisco.llm.batch import BatchEngine, BatchStore, make_batch_api
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine
from featdisco.llm.openai import OpenAILLM
from tests.fakes.batch_server import FakeBatchServer
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features

KEY = "sk-test-batch-key"
SCHEMA: dict[str, Any] = {"type": "object", "required": ["features"],
                          "properties": {"features": {"type": "array", "minItems": 1,
                                                      "items": {"type": "string"}}}}


def requests(n: int, tag: str = "piece") -> list[LLMRequest]:
    return [LLMRequest((ChatMessage("system", "Describe the piece."),
                        ChatMessage("user", f"{tag} number {i}")),
                       schema=SCHEMA, schema_name="features", prompt_version="t1")
            for i in range(n)]


@pytest.fixture
def server() -> Iterator[FakeBatchServer]:
    with FakeBatchServer(api_key=KEY) as srv:
        yield srv


def backend(kind: str, srv: FakeBatchServer | FakeOpenAIServer) -> Any:
    if kind == "openai":
        return OpenAILLM("fake-rater", base_url=srv.base_url, api_key=KEY)
    pytest.importorskip("anthropic")  # the optional extra (featdisco[anthropic])
    return AnthropicLLM("claude-haiku-4-5", base_url=srv.root_url, api_key=KEY)


def engine(kind: str, srv: FakeBatchServer, cache_path: Path, **kw: Any) -> BatchEngine:
    return BatchEngine(backend(kind, srv), CallCache(cache_path), poll_interval=0.01,
                       progress="none", **kw)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_happy_path_chunks_and_matches_online(kind: str, server: FakeBatchServer,
                                               tmp_path: Path) -> None:
    reqs = requests(7)
    eng = engine(kind, server, tmp_path / "cache.sqlite", max_requests=3)
    results = eng.run_sync(reqs + reqs[:2])  # duplicates are sent once
    assert [r.status for r in results] == ["ok"] * 9
    assert server.creates[kind] == 3  # 7 unique requests in chunks of at most 3
    assert set(server.hits.values()) == {1}
    assert [r.key for r in results] == [eng.key(r) for r in reqs + reqs[:2]]
    assert eng.last_summary.ok == 7 and eng.last_summary.unique == 7
    # the same requests through the online engine give the same validated data
    with FakeOpenAIServer(echo_features, api_key=KEY) as online:
        direct = CallEngine(backend(kind, online), progress="none").run_sync(reqs)
    assert [r.data for r in results[:7]] == [r.data for r in direct]
    # and everything is in the cache: a rerun submits nothing
    again = engine(kind, server, tmp_path / "cache.sqlite").run_sync(reqs)
    assert all(r.cached for r in again) and server.creates[kind] == 3


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_restart_resumes_polling_without_resubmitting(kind: str, server: FakeBatchServer,
                                                      tmp_path: Path) -> None:
    server.state.polls_before_done = 3
    cache = tmp_path / "cache.sqlite"
    first = engine(kind, server, cache, wait=False)  # submit, then stop before it finishes
    out = first.run_sync(requests(5))
    assert {r.reason for r in out} == {"pending"} and server.creates[kind] == 1
    first.cache.close()  # type: ignore[union-attr]
    store = BatchStore(cache)
    assert [b.status for b in store.all()] == ["submitted"]
    store.close()
    second = engine(kind, server, cache)  # a new process: fresh objects over the same file
    out = second.run_sync(requests(5))
    assert all(r.ok for r in out)
    assert server.creates[kind] == 1 and set(server.hits.values()) == {1}
    assert second.submitted == []


def flaky(req: FakeRequest) -> Reply:
    """Fails some pieces on their first attempt, each in a different way."""
    if req.attempt == 1:
        if req.key.endswith(" 1"):
            return Reply(content="this is not JSON at all")
        if req.key.endswith(" 2"):
            return Reply(status=500, raw_body=b'{"error": {"message": "overloaded"}}')
        if req.key.endswith(" 3"):
            return Reply(action="expire")
    return echo_features(req)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_partial_failures_recorded_then_resubmitted(kind: str, server: FakeBatchServer,
                                                    tmp_path: Path) -> None:
    server.set_handler(flaky)
    cache_path = tmp_path / "cache.sqlite"
    eng = engine(kind, server, cache_path)
    out = eng.run_sync(requests(6))
    reasons = [r.reason for r in out]
    assert reasons[0] is None and reasons[4:] == [None, None]
    assert reasons[1] == "invalid-json" and reasons[2] == "server-error"
    assert reasons[3] == "batch-expired"
    cache = CallCache(cache_path)
    stored = cache.get_many([r.key for r in out])
    assert [stored[r.key].status for r in out] == ["ok", "failed", "failed", "failed", "ok", "ok"]
    assert stored[out[1].key].text == "this is not JSON at all"  # the reply is kept for study
    cache.close()
    again = engine(kind, server, cache_path)
    out2 = again.run_sync(requests(6))
    assert all(r.ok for r in out2)
    assert server.creates[kind] == 2
    assert again.last_summary.cached == 3
    assert {k[-1]: v for k, v in server.hits.items()} == {"0": 1, "1": 2, "2": 2, "3": 2,
                                                          "4": 1, "5": 1}


def test_byte_limit_splits_batches(server: FakeBatchServer, tmp_path: Path) -> None:
    eng = engine("openai", server, tmp_path / "c.sqlite", max_bytes=1500)
    reqs = requests(6)
    size = len(make_batch_api(eng.backend).line("k" * 64, reqs[0])) + 1
    per_batch = 1500 // size
    assert 1 <= per_batch < 6
    out = eng.run_sync(reqs)
    assert all(r.ok for r in out)
    assert server.creates["openai"] == -(-6 // per_batch)
    store = BatchStore(tmp_path / "c.sqlite")
    assert store.all()[0].requests == per_batch
    assert sum(b.requests for b in store.all()) == 6
    store.close()


def test_cost_cap_stops_before_submitting(server: FakeBatchServer, tmp_path: Path) -> None:
    reqs = [LLMRequest(r.messages, r.schema, r.schema_name, Sampling(max_tokens=50),
                       r.prompt_version) for r in requests(10)]
    eng = BatchEngine(backend("anthropic", server), CallCache(tmp_path / "c.sqlite"),
                      poll_interval=0.01, progress="none", max_cost=0.0005)
    out = eng.run_sync(reqs)
    sent = [r for r in out if r.status != "skipped_budget"]
    assert 0 < len(sent) < 10 and all(r.ok for r in sent)
    assert out[-1].reason == "budget" and server.creates["anthropic"] == 1
    assert eng.spent <= 0.0005
