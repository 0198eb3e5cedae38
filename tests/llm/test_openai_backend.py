"""The openai backend against the fake over real HTTP: wire format and error mapping."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

from featdisco.llm.base import ChatMessage, LLMError, LLMRequest, parse_retry_after
from featdisco.llm.openai import OpenAILLM
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features
from tests.llm.conftest import SCHEMA, make_engine, requests_for


async def _acomplete(backend: OpenAILLM, req: LLMRequest) -> Any:
    try:
        return await backend.complete(req)
    finally:
        await backend.aclose()


def _complete(backend: OpenAILLM, req: LLMRequest) -> Any:
    return asyncio.run(_acomplete(backend, req))


def _capture(seen: list[dict[str, Any]]) -> Any:
    def handler(req: FakeRequest) -> Reply:
        seen.append(req.body)
        return echo_features(req)
    return handler


def test_structured_round_trip_over_http(fake: FakeOpenAIServer) -> None:
    seen: list[dict[str, Any]] = []
    fake.set_handler(_capture(seen))
    engine = make_engine(fake, None)
    [res] = engine.run_sync(requests_for(["A user asks about apples"]))
    assert res.status == "ok"
    assert res.data["echo"] == "A user asks about apples"
    assert res.data["features"] and all(isinstance(f, str) for f in res.data["features"])
    body = seen[0]
    assert body["response_format"]["type"] == "json_schema"
    # The server gets the shape; bounds like minItems stay with the engine's validation.
    sent = body["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["features"] == {"type": "array", "items": {"type": "string"}}
    assert sent["required"] == SCHEMA["required"]
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["max_tokens"] == 200 and body["temperature"] == 0.0
    assert res.usage.input_tokens > 0 and res.usage.output_tokens > 0


@pytest.mark.parametrize("mode", ["object", "prompt"])
def test_json_modes_put_schema_in_prompt(fake: FakeOpenAIServer, mode: str) -> None:
    seen: list[dict[str, Any]] = []
    fake.set_handler(_capture(seen))
    backend = OpenAILLM("m", base_url=fake.base_url, json_mode=mode)  # type: ignore[arg-type]
    req = requests_for(["piece"])[0]
    resp = _complete(backend, req)
    assert json.loads(resp.text)["echo"] == "piece"
    body = seen[0]
    assert body["messages"][0]["role"] == "system"
    assert json.dumps(SCHEMA, sort_keys=True) in body["messages"][0]["content"]
    if mode == "object":
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert "response_format" not in body


def _error_for(fake: FakeOpenAIServer, reply: Reply, timeout: float = 5.0) -> LLMError:
    fake.set_handler(lambda req: reply)
    backend = OpenAILLM("m", base_url=fake.base_url, api_key="sk-test", timeout=timeout)
    req = LLMRequest((ChatMessage("user", "x"),))
    with pytest.raises(LLMError) as info:
        _complete(backend, req)
    return info.value


def test_rate_limit_is_retryable_with_retry_after(fake: FakeOpenAIServer) -> None:
    err = _error_for(fake, Reply(status=429, headers={"retry-after": "7"},
                                 raw_body=b'{"error": {"message": "slow down"}}'))
    assert (err.reason, err.retryable, err.retry_after) == ("rate-limit", True, 7.0)
    err = _error_for(fake, Reply(status=429, headers={"retry-after-ms": "250", "retry-after": "1"},
                                 raw_body=b'{"error": {"message": "slow down"}}'))
    assert err.retry_after == 0.25


@pytest.mark.parametrize(("status", "reason", "retryable"), [
    (500, "server-error", True), (503, "server-error", True), (400, "bad-request", False),
    (401, "auth", False), (403, "forbidden", False), (404, "not-found", False)])
def test_status_mapping(fake: FakeOpenAIServer, status: int, reason: str,
                       retryable: bool) -> None:
    err = _error_for(fake, Reply(status=status, raw_body=b'{"error": {"message": "no"}}'))
    assert (err.reason, err.retryable) == (reason, retryable)


def test_reset_and_timeout_and_garbage_are_retryable(fake: FakeOpenAIServer) -> None:
    assert _error_for(fake, Reply(action="reset")).reason == "connection"
    err = _error_for(fake, Reply(action="hang"), 0.3)
    assert (err.reason, err.retryable) == ("timeout", True)
    err = _error_for(fake, Reply(raw_body=b"{this is not json"))
    assert (err.reason, err.retryable) == ("bad-response", True)


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_compressed_replies_are_decoded(fake: FakeOpenAIServer) -> None:
    body = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"echo": "z", "features": ["F"]}'}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
    fake.set_handler(lambda req: Reply(raw_body=gzip.compress(body),
                                       headers={"content-encoding": "gzip"}))
    backend = OpenAILLM("m", base_url=fake.base_url)
    resp = _complete(backend, requests_for(["z"])[0])
    assert json.loads(resp.text)["echo"] == "z" and resp.usage.output_tokens == 4


def test_engine_waits_out_retry_after_then_succeeds(fake: FakeOpenAIServer) -> None:
    arrivals: list[float] = []

    def handler(req: FakeRequest) -> Reply:
        arrivals.append(time.monotonic())
        if req.attempt == 1:
            return Reply(status=429, headers={"retry-after-ms": "300"},
                         raw_body=b'{"error": {"message": "slow down"}}')
        return echo_features(req)

    fake.set_handler(handler)
    [res] = make_engine(fake, None).run_sync(requests_for(["later"]))
    assert res.status == "ok" and res.attempts == 2
    assert arrivals[1] - arrivals[0] >= 0.3  # the server's wait, not the 0.05 s backoff cap


def _seen_headers(fake: FakeOpenAIServer, send: Callable[[], Awaitable[Any]]
                  ) -> dict[str, str]:
    seen: list[dict[str, str]] = []

    def handler(req: FakeRequest) -> Reply:
        seen.append(req.headers)
        return echo_features(req)

    fake.set_handler(handler)
    asyncio.run(send())  # type: ignore[arg-type]
    return seen[0]


def test_sdk_configuration_reaches_the_server(fake: FakeOpenAIServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend sends what the official SDK sends for the same settings: its auth,
    organization and project (from the SDK's own environment variables), user agent and
    the caller's default headers, to the base URL the SDK resolved (here from
    OPENAI_BASE_URL)."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    backend = OpenAILLM("m", api_key="sk-test", default_headers={"X-Team": "research"})
    ours = _seen_headers(fake, lambda: _acomplete(backend, requests_for(["h"])[0]))

    async def by_the_sdk() -> None:
        async with openai.AsyncOpenAI(api_key="sk-test", max_retries=0, timeout=60.0,
                                      default_headers={"X-Team": "research"}) as client:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "h"}])

    sdks = _seen_headers(fake, by_the_sdk)
    assert ours["authorization"] == "Bearer sk-test"
    assert ours["openai-organization"] == "org-test"
    assert ours["openai-project"] == "proj-test"
    assert ours["x-team"] == "research"
    assert ours["user-agent"].startswith("AsyncOpenAI/Python")
    assert ours["content-type"] == "application/json"
    # the same headers as the SDK's own request, apart from connection-level ones
    own = {"host", "content-length", "accept-encoding", "connection"}
    assert {k: v for k, v in ours.items() if k not in own} == \
        {k: v for k, v in sdks.items() if k not in own}


def test_key_never_in_errors(fake: FakeOpenAIServer) -> None:
    key = "sk-proj-LEANSECRET0123456789"
    fake.set_handler(lambda req: Reply(status=401, raw_body=(
        '{"error": {"message": "Incorrect API key provided: ' + key + '"}}').encode()))
    backend = OpenAILLM("m", base_url=fake.base_url, api_key=key)
    with pytest.raises(LLMError) as info:
        _complete(backend, requests_for(["k"])[0])
    assert info.value.reason == "auth" and "Incorrect API key provided" in info.value.message
    assert "LEANSECRET" not in info.value.message and "LEANSECRET" not in repr(backend)
    # nothing listens on port 9: a connection error, its text redacted all the same
    backend = OpenAILLM("m", base_url=f"http://127.0.0.1:9/{key}", api_key=key)
    with pytest.raises(LLMError) as info:
        _complete(backend, requests_for(["k"])[0])
    assert info.value.reason == "connection" and info.value.retryable
    assert "LEANSECRET" not in info.value.message
