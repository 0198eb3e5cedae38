"""The openai backend against the fake over real HTTP: wire format and error mapping."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import pytest

from featdisco.llm.base import ChatMessage, LLMError, LLMRequest, parse_retry_after
from featdisco.llm.openai import OpenAILLM
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features
from tests.llm.conftest import SCHEMA, make_engine, requests_for


def _complete(backend: OpenAILLM, req: LLMRequest) -> Any:
    async def go() -> Any:
        try:
            return await backend.complete(req)
        finally:
            await backend.aclose()
    return asyncio.run(go())


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


@pytest.fixture(params=[False, True], ids=["aiohttp", "sdk"])
def via_sdk(request: pytest.FixtureRequest) -> bool:
    """Both ways a call can go: aiohttp (the default) and the SDK (settings only it applies)."""
    return bool(request.param)


def _error_for(fake: FakeOpenAIServer, reply: Reply, timeout: float = 5.0,
               via_sdk: bool = False) -> LLMError:
    fake.set_handler(lambda req: reply)
    backend = OpenAILLM("m", base_url=fake.base_url, api_key="sk-test", timeout=timeout,
                        via_sdk=via_sdk)
    req = LLMRequest((ChatMessage("user", "x"),))
    with pytest.raises(LLMError) as info:
        _complete(backend, req)
    return info.value


def test_rate_limit_is_retryable_with_retry_after(fake: FakeOpenAIServer, via_sdk: bool) -> None:
    err = _error_for(fake, Reply(status=429, headers={"retry-after": "7"},
                                 raw_body=b'{"error": {"message": "slow down"}}'), 5.0, via_sdk)
    assert (err.reason, err.retryable, err.retry_after) == ("rate-limit", True, 7.0)
    err = _error_for(fake, Reply(status=429, headers={"retry-after-ms": "250", "retry-after": "1"},
                                 raw_body=b'{"error": {"message": "slow down"}}'))
    assert err.retry_after == 0.25


@pytest.mark.parametrize(("status", "reason", "retryable"), [
    (500, "server-error", True), (503, "server-error", True), (400, "bad-request", False),
    (401, "auth", False), (403, "forbidden", False), (404, "not-found", False)])
def test_status_mapping(fake: FakeOpenAIServer, status: int, reason: str, retryable: bool,
                        via_sdk: bool) -> None:
    err = _error_for(fake, Reply(status=status, raw_body=b'{"error": {"message": "no"}}'), 5.0,
                     via_sdk)
    assert (err.reason, err.retryable) == (reason, retryable)


def test_reset_and_timeout_and_garbage_are_retryable(fake: FakeOpenAIServer,
                                                      via_sdk: bool) -> None:
    assert _error_for(fake, Reply(action="reset"), 5.0, via_sdk).reason == "connection"
    err = _error_for(fake, Reply(action="hang"), 0.3, via_sdk)
    assert (err.reason, err.retryable) == ("timeout", True)
    err = _error_for(fake, Reply(raw_body=b"{this is not json"), 5.0, via_sdk)
    assert (err.reason, err.retryable) == ("bad-response", True)


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_compressed_replies_are_decoded(fake: FakeOpenAIServer, via_sdk: bool) -> None:
    body = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"echo": "z", "features": ["F"]}'}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
    fake.set_handler(lambda req: Reply(raw_body=gzip.compress(body),
                                       headers={"content-encoding": "gzip"}))
    backend = OpenAILLM("m", base_url=fake.base_url, via_sdk=via_sdk)
    resp = _complete(backend, requests_for(["z"])[0])
    assert json.loads(resp.text)["echo"] == "z" and resp.usage.output_tokens == 4


def test_engine_waits_out_retry_after_then_succeeds(fake: FakeOpenAIServer, via_sdk: bool) -> None:
    arrivals: list[float] = []

    def handler(req: FakeRequest) -> Reply:
        arrivals.append(time.monotonic())
        if req.attempt == 1:
            return Reply(status=429, headers={"retry-after-ms": "300"},
                         raw_body=b'{"error": {"message": "slow down"}}')
        return echo_features(req)

    fake.set_handler(handler)
    [res] = make_engine(fake, None, via_sdk=via_sdk).run_sync(requests_for(["later"]))
    assert res.status == "ok" and res.attempts == 2
    assert arrivals[1] - arrivals[0] >= 0.3  # the server's wait, not the 0.05 s backoff cap


def _sent_headers(fake: FakeOpenAIServer, backend: OpenAILLM) -> dict[str, str]:
    seen: list[dict[str, str]] = []

    def handler(req: FakeRequest) -> Reply:
        seen.append(req.headers)
        return echo_features(req)

    fake.set_handler(handler)
    _complete(backend, requests_for(["h"])[0])
    return seen[0]


def test_sdk_configuration_reaches_the_server(fake: FakeOpenAIServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The aiohttp path sends what the SDK would: its auth, organization and project (from
    the SDK's own environment variables), user agent and the caller's default headers,
    to the base URL the SDK resolved (here from OPENAI_BASE_URL)."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    sent = {}
    for sdk in (False, True):
        backend = OpenAILLM("m", api_key="sk-test", via_sdk=sdk,
                            default_headers={"X-Team": "research"})
        sent[sdk] = _sent_headers(fake, backend)
    transport_level = {"host", "content-length", "accept-encoding", "connection"}
    lean = sent[False]
    assert lean["authorization"] == "Bearer sk-test"
    assert lean["openai-organization"] == "org-test"
    assert lean["openai-project"] == "proj-test"
    assert lean["x-team"] == "research"
    assert lean["user-agent"].startswith("AsyncOpenAI/Python")
    assert lean["content-type"] == "application/json"
    # the same headers as the SDK's own request, apart from connection-level ones
    assert {k: v for k, v in lean.items() if k not in transport_level} == \
        {k: v for k, v in sent[True].items() if k not in transport_level}


def test_key_never_in_errors(fake: FakeOpenAIServer, via_sdk: bool) -> None:
    key = "sk-proj-LEANSECRET0123456789"
    fake.set_handler(lambda req: Reply(status=401, raw_body=(
        '{"error": {"message": "Incorrect API key provided: ' + key + '"}}').encode()))
    backend = OpenAILLM("m", base_url=fake.base_url, api_key=key, via_sdk=via_sdk)
    with pytest.raises(LLMError) as info:
        _complete(backend, requests_for(["k"])[0])
    assert info.value.reason == "auth" and "Incorrect API key provided" in info.value.message
    assert "LEANSECRET" not in info.value.message and "LEANSECRET" not in repr(backend)
    # nothing listens on port 9: a connection error, its text redacted all the same
    backend = OpenAILLM("m", base_url=f"http://127.0.0.1:9/{key}", api_key=key,
                        via_sdk=via_sdk)
    with pytest.raises(LLMError) as info:
        _complete(backend, requests_for(["k"])[0])
    assert info.value.reason == "connection" and info.value.retryable
    assert "LEANSECRET" not in info.value.message
