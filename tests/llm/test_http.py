"""How the openai backend's calls go over the wire on aiohttp, its one send path: the
reply-size cap, the environment's proxies (a real forwarding proxy on 127.0.0.1), Retry-After
on a 429, one connection pool kept across stages, and retries a person watching a run can
see."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMError
from featdisco.llm.limits import backoff_delay
from featdisco.llm.openai import OpenAILLM
from featdisco.rundir import RunDir
from featdisco.stages.base import Backends, Stage, StageContext, StageResult, StageRunner
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features
from tests.llm.conftest import make_engine, requests_for

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
              "ALL_PROXY", "all_proxy")
COMPLETION = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": json.dumps({"echo": "p", "features": ["Via a proxy"]})}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _run(make: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(make())  # type: ignore[arg-type]


class Proxy:
    """A forwarding HTTP proxy on 127.0.0.1 that records each request head it gets. An
    absolute-form request is answered with ``COMPLETION`` (the origin need not exist); a
    CONNECT is refused, after its head is recorded."""

    def __init__(self) -> None:
        self.heads: list[tuple[str, dict[str, str]]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *rest = head.strip().split("\r\n")
                headers = {k.strip().lower(): v.strip()
                           for k, v in (x.split(":", 1) for x in rest)}
                self.heads.append((line, headers))
                if line.startswith("CONNECT"):
                    w.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                else:
                    await r.readexactly(int(headers.get("content-length", "0")))
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                            + f"content-length: {len(COMPLETION)}\r\n\r\n".encode() + COMPLETION)
                await w.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


async def _call(backend: OpenAILLM) -> Any:
    try:
        return await backend.complete(requests_for(["p"])[0])
    finally:
        await backend.aclose()


@pytest.mark.parametrize("credentials", ["agent:pa%40ss@", ""])
def test_calls_go_through_the_environment_proxy_with_its_credentials(
        no_proxy_env: pytest.MonkeyPatch, credentials: str) -> None:
    """HTTP_PROXY set: the call reaches the origin only through the proxy, in absolute
    form, with the proxy's own credentials as Proxy-Authorization, as the SDK sends it."""
    async def go() -> Proxy:
        async with Proxy() as proxy:
            no_proxy_env.setenv("HTTP_PROXY", f"http://{credentials}127.0.0.1:{proxy.port}")
            # the origin's name does not resolve: only the proxy can answer for it
            resp = await _call(OpenAILLM("m", base_url="http://llm.invalid:8080/v1",
                                         api_key="sk-x"))
            assert json.loads(resp.text)["features"] == ["Via a proxy"]
        return proxy

    [(line, headers)] = _run(go).heads
    assert line == "POST http://llm.invalid:8080/v1/chat/completions HTTP/1.1"
    assert headers.get("proxy-authorization") == (
        "Basic " + base64.b64encode(b"agent:pa@ss").decode() if credentials else None)
    assert headers["authorization"] == "Bearer sk-x"


def test_an_https_origin_tunnels_and_the_proxy_never_sees_the_api_key(
        no_proxy_env: pytest.MonkeyPatch) -> None:
    """Through a proxy to an https origin, the proxy gets a CONNECT with its own
    credentials; the API key stays inside the tunnel (aiohttp would copy a session's
    Authorization header into the CONNECT request as Proxy-Authorization)."""
    async def go() -> Proxy:
        async with Proxy() as proxy:
            no_proxy_env.setenv("HTTPS_PROXY", f"http://agent:s3cret@127.0.0.1:{proxy.port}")
            backend = OpenAILLM("m", base_url="https://llm.invalid/v1", api_key="sk-TUNNELKEY")
            with pytest.raises(LLMError) as info:
                await _call(backend)
            assert info.value.retryable and "s3cret" not in info.value.message
        return proxy

    [(line, headers)] = _run(go).heads
    assert line == "CONNECT llm.invalid:443 HTTP/1.1"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"agent:s3cret").decode()
    assert not any("TUNNELKEY" in v for v in headers.values())


@pytest.mark.parametrize(("var", "value"), [
    ("ALL_PROXY", "http://127.0.0.1:3128"), ("HTTP_PROXY", "127.0.0.1:3128"),
    ("HTTP_PROXY", "socks5://agent:s3cret@127.0.0.1:1080"),
    ("HTTP_PROXY", "https://agent:s3cret@127.0.0.1:3128")])
def test_a_proxy_aiohttp_cannot_use_is_refused_not_gone_around(
        no_proxy_env: pytest.MonkeyPatch, var: str, value: str) -> None:
    """ALL_PROXY, a bare host:port, a SOCKS or an https:// proxy: aiohttp would ignore them
    (or fail on every call); the backend refuses to start with a message that says what to set, rather
    than send the calls around a proxy the user set. NO_PROXY still exempts a host."""
    no_proxy_env.setenv(var, value)
    with pytest.raises(FeatdiscoError, match=var if var == "ALL_PROXY" else "http://") as info:
        OpenAILLM("m", base_url="http://llm.invalid:8080/v1", api_key="sk-x")
    assert "s3cret" not in str(info.value)
    no_proxy_env.setenv("NO_PROXY", "llm.invalid")
    assert OpenAILLM("m", base_url="http://llm.invalid:8080/v1", api_key="sk-x")


def test_no_proxy_hosts_are_reached_directly(no_proxy_env: pytest.MonkeyPatch,
                                            fake: FakeOpenAIServer) -> None:
    async def go() -> Proxy:
        async with Proxy() as proxy:
            no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            no_proxy_env.setenv("NO_PROXY", "127.0.0.1,localhost")
            resp = await _call(OpenAILLM("m", base_url=fake.base_url))
            assert json.loads(resp.text)["echo"] == "p"
        return proxy

    assert _run(go).heads == [] and fake.total == 1


def test_a_reply_over_the_cap_is_refused(fake: FakeOpenAIServer) -> None:
    """A server (or proxy) that sends more than any completion needs cannot fill the
    client's memory: declared too long, or streamed past the cap, the call fails at once
    with a reason that says so, and is not retried."""
    big = json.dumps({"choices": [{"message": {"content": "x" * 5000}}]}).encode()
    fake.set_handler(lambda req: Reply(raw_body=big))
    with pytest.raises(LLMError) as info:
        _run(lambda: _call(OpenAILLM("m", base_url=fake.base_url, max_reply_bytes=4096)))
    assert info.value.reason == "reply-too-large" and not info.value.retryable
    assert "4,096 bytes" in info.value.message

    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(10):  # no length announced: the cap applies while reading
            w.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        w.write(b"0\r\n\r\n")
        await w.drain()
        w.close()

    async def go() -> LLMError:
        server = await asyncio.start_server(chunked, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(LLMError) as info:
                await _call(OpenAILLM("m", base_url=f"http://127.0.0.1:{port}/v1",
                                      max_reply_bytes=4096))
        finally:
            server.close()
        return info.value

    err = _run(go)
    assert err.reason == "reply-too-large"


def test_a_429_is_retried_after_the_servers_retry_after(fake: FakeOpenAIServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429 with Retry-After in seconds: the engine waits the server's time (not its own
    short backoff) and the call then succeeds."""
    seen: list[int] = []

    def handler(req: FakeRequest) -> Reply:
        seen.append(req.attempt)
        if req.attempt == 1:
            return Reply(status=429, headers={"retry-after": "1"},
                         raw_body=b'{"error": {"message": "Rate limit reached"}}')
        return echo_features(req)

    fake.set_handler(handler)
    waits: list[float] = []

    def recorded(*args: Any) -> float:
        waits.append(backoff_delay(*args))
        return waits[-1]

    monkeypatch.setattr("featdisco.llm.engine.backoff_delay", recorded)
    engine = make_engine(fake, None, backoff_max=1.0)
    [res] = engine.run_sync(requests_for(["wait for me"]))
    assert res.ok and res.attempts == 2 and seen == [1, 2]
    assert waits == [1.0]  # the server's second, not the engine's own (shorter) backoff
    assert engine.last_summary.retried_by_reason == {"rate-limit": 1}


def test_one_pool_serves_every_stage_until_close(fake: FakeOpenAIServer) -> None:
    """Two run_sync calls (two stages) share the engine's loop and its connections: the
    second stage opens no new connection."""
    engine = make_engine(fake, None, concurrency=1)
    posters = engine.backend._posters  # type: ignore[attr-defined]
    engine.run_sync(requests_for(["stage one"]))
    [first] = posters._clients.values()
    loop = engine._runner.get_loop()  # type: ignore[union-attr]
    engine.run_sync(requests_for(["stage two"]))
    assert engine._runner is not None and engine._runner.get_loop() is loop
    assert list(posters._clients.values()) == [first]
    engine.close()
    assert loop.is_closed() and first._session.closed
    assert engine.backend._posters._clients == {}  # type: ignore[attr-defined]
    assert engine.run_sync(requests_for(["after close"]))[0].ok  # a new loop on demand
    engine.close()


HANG_TIMEOUT = 2.0


def _flaky(req: FakeRequest) -> Reply:
    """Each call's first attempt hangs (a timeout) or is rate limited; the next succeeds.
    The tests give the hang a 2 s timeout (HANG_TIMEOUT): far above what a healthy reply
    takes on a loaded machine, so no healthy reply is ever counted as a timeout."""
    if req.attempt == 1:
        if req.key.startswith("slow"):
            return Reply(action="hang")
        return Reply(status=429, headers={"retry-after-ms": "10"},
                     raw_body=b'{"error": {"message": "Rate limit reached"}}')
    return echo_features(req)


def test_retries_show_in_progress_while_they_happen_and_in_the_summary(
        fake: FakeOpenAIServer, caplog: pytest.LogCaptureFixture) -> None:
    from featdisco.llm.progress import LogProgress

    fake.set_handler(_flaky)
    progress = LogProgress(interval=0.0)  # a line at every event
    engine = make_engine(fake, None, timeout=HANG_TIMEOUT, progress=progress)
    with caplog.at_level(logging.INFO, logger="featdisco.llm"):
        results = engine.run_sync(requests_for(["slow a", "slow b", "busy c"]))
    assert all(r.ok for r in results)
    lines = [r.getMessage() for r in caplog.records]
    # seen before the calls finished: a line that counts a retry while 0 calls are done
    assert any("0/3 done" in line and "retried" in line for line in lines), lines
    assert "retried 3 (timeout 2, rate-limit 1)" in lines[-1]
    assert engine.last_summary.retried_by_reason == {"timeout": 2, "rate-limit": 1}
    assert "3 retried: timeout 2, rate-limit 1" in str(engine.last_summary)
    engine.close()


class _Ask(Stage):
    name = "ask"
    version = 1
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        results = ctx.engine.run_sync(requests_for(["slow x", "slow y", "busy z"]))
        return StageResult({"ok": sum(r.ok for r in results)})


class _Backends(Backends):
    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def identity(self, backend: str) -> Any:
        return {"backend": "openai", "model": "m"}

    @property
    def engine(self) -> Any:
        return self._engine

    @property
    def embedder(self) -> Any:
        raise AssertionError

    @property
    def executor(self) -> Any:
        raise AssertionError

    def prompt(self, name: str) -> Any:
        raise AssertionError


def test_a_stages_summary_line_says_what_was_retried(fake: FakeOpenAIServer,
                                                     tmp_path: Path) -> None:
    """'name: done (62.1s)' hid 18 timeouts; the line now names the retries by reason."""
    fake.set_handler(_flaky)
    engine = make_engine(fake, None, timeout=HANG_TIMEOUT)
    lines: list[str] = []
    runner = StageRunner(RunDir(tmp_path / "run"), object(), _Backends(engine), lines.append)
    out = runner.run(_Ask(), llm_summary=lambda: engine.summary.as_dict())
    assert out.counts == {"ok": 3}
    assert lines[-1].startswith("ask: done (") and lines[-1].endswith(
        ", 3 retried: timeout 2, rate-limit 1)")
    assert out.llm is not None and out.llm["retried_by_reason"] == {"timeout": 2, "rate-limit": 1}
    engine.close()
