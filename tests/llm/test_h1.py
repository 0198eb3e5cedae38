"""The lean HTTP/1.1 client against scripted raw TCP servers: the wire forms real servers
send (chunked, close-delimited, compressed, interim replies), broken replies, the pool,
cancellation, TLS, and when the openai backend picks it."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm import h1
from featdisco.llm.base import LLMError
from featdisco.llm.h1 import H1Poster
from featdisco.llm.transport import lean_kind

Script = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server whose every connection runs ``script``; counts connections and keeps
    the requests it read."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.heads: list[bytes] = []  # each request's head as sent, duplicates and all
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(self, r, w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ssl)
        return self

    ssl: Any = None

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}/v1/chat/completions"

    async def read_request(self, r: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
        head = await r.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        line, *rest = head[:-4].split(b"\r\n")
        headers = {k.decode().lower(): v.decode().strip()
                   for k, v in (x.split(b":", 1) for x in rest)}
        body = await r.readexactly(int(headers["content-length"]))
        self.requests.append((line, headers, body))
        return line, headers, body


def _reply(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def serve_each(make: Callable[[int], bytes]) -> Script:
    """Answer every request on a connection with ``make(request number)``."""
    async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await s.read_request(r)
            w.write(make(len(s.requests)))
            await w.drain()
    return script


def run(coro: Awaitable[Any]) -> Any:
    async def go() -> Any:
        return await coro
    return asyncio.run(go())


def test_request_bytes_and_keep_alive_reuse() -> None:
    async def go() -> None:
        async with RawServer(serve_each(lambda n: _reply(b'{"n": %d}' % n))) as srv:
            p = H1Poster(4, 5.0, {"Authorization": "Bearer k", "X-Team": "r",
                                  "Content-Type": "text/plain"})
            for i in range(3):
                status, headers, body = await p.post(srv.url, b'{"i": %d}' % i)
                assert (status, body) == (200, b'{"n": %d}' % (i + 1))
                assert headers["content-length"] == str(len(body))
            await p.close()
            port = srv.url.split(":")[2].split("/")[0]
        assert srv.connections == 1  # one keep-alive connection carried all three
        line, headers, body = srv.requests[2]
        assert line == b"POST /v1/chat/completions HTTP/1.1"
        assert headers["host"] == f"127.0.0.1:{port}"
        assert headers["authorization"] == "Bearer k" and headers["x-team"] == "r"
        assert headers["content-type"] == "application/json"  # ours, not the caller's
        assert body == b'{"i": 2}'
    run(go())


@pytest.mark.parametrize("form", ["chunked", "close", "interim", "gzip", "deflate", "raw-deflate"])
def test_reply_forms(form: str) -> None:
    payload = b'{"choices": []}' * 50
    if form == "chunked":
        wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in (payload[:7], payload[7:]))
                + b"0\r\n\r\n")
    elif form == "close":  # no length: the body ends when the server closes
        wire = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload
    elif form == "interim":
        wire = b"HTTP/1.1 100 Continue\r\n\r\n" + _reply(payload)
    elif form == "gzip":
        wire = _reply(gzip.compress(payload), "Content-Encoding: gzip")
    elif form == "deflate":
        wire = _reply(zlib.compress(payload), "Content-Encoding: deflate")
    else:
        c = zlib.compressobj(wbits=-15)
        wire = _reply(c.compress(payload) + c.flush(), "Content-Encoding: deflate")

    async def go() -> int:

        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.read_request(r)
            w.write(wire)
            await w.drain()
            if form == "close":
                return  # the handler closes the connection
            await s.read_request(r)
            w.write(_reply(b"second"))
            await w.drain()

        async with RawServer(script) as srv:
            p = H1Poster(4, 5.0, {})
            status, _, body = await p.post(srv.url, b"{}")
            assert (status, body) == (200, payload)
            status, _, body = await p.post(srv.url, b"{}")
            assert (status, body) == (200, b"second" if form != "close" else payload)
            await p.close()
        return srv.connections

    # a close-delimited reply cannot be followed on its connection; the others are reused
    assert run(go()) == (2 if form == "close" else 1)


def test_status_and_headers_reach_the_caller() -> None:
    async def go() -> None:
        wire = _reply(b'{"error": {}}', "Retry-After-Ms: 250", "X-Multi: a", "X-Multi: b",
                      status="429 Too Many Requests")
        async with RawServer(serve_each(lambda n: wire)) as srv:
            p = H1Poster(1, 5.0, {})
            status, headers, body = await p.post(srv.url, b"{}")
            await p.close()
        assert status == 429 and body == b'{"error": {}}'
        assert headers["retry-after-ms"] == "250" and headers["x-multi"] == "a, b"
    run(go())


@pytest.mark.parametrize("fault", ["cut-short", "garbage", "reset", "bad-gzip"])
def test_broken_replies_are_retryable_connection_errors(fault: str) -> None:
    async def go() -> LLMError:

        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.read_request(r)
            if fault == "cut-short":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            elif fault == "garbage":
                w.write(b"SMTP ready\r\n\r\n")
            elif fault == "bad-gzip":
                w.write(_reply(b"not gzip at all", "Content-Encoding: gzip"))
            else:
                w.transport.abort()
                return
            await w.drain()
            if fault == "bad-gzip":
                await asyncio.sleep(1)

        async with RawServer(script) as srv:
            p = H1Poster(1, 5.0, {"Authorization": "Bearer sk-SECRET"}, ("sk-SECRET",))
            with pytest.raises(LLMError) as info:
                await p.post(srv.url, b"{}")
            # the pool survives: the failed connection is dropped, not reused
            assert not p._busy and not p._idle
            await p.close()
        return info.value

    err = run(go())
    assert (err.reason, err.retryable) == ("connection", True)
    assert "SECRET" not in err.message


def test_pool_bounds_connections_and_queues_the_rest() -> None:
    async def go() -> None:
        open_now = peak = 0

        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal open_now, peak
            open_now += 1
            peak = max(peak, open_now)
            try:
                while True:
                    await s.read_request(r)
                    await asyncio.sleep(0.02)
                    w.write(_reply(b"ok"))
                    await w.drain()
            finally:
                open_now -= 1

        async with RawServer(script) as srv:
            p = H1Poster(3, 5.0, {})
            replies = await asyncio.gather(*(p.post(srv.url, b"{}") for _ in range(30)))
            await p.close()
        assert [r[2] for r in replies] == [b"ok"] * 30
        assert srv.connections == 3 and peak == 3
    run(go())


def test_timeout_and_cancellation_free_the_connection() -> None:
    async def go() -> None:

        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while True:
                _, _, body = await s.read_request(r)
                if body == b"hang":
                    await asyncio.sleep(30)
                w.write(_reply(b"ok"))
                await w.drain()

        async with RawServer(script) as srv:
            p = H1Poster(1, 0.3, {})
            with pytest.raises(LLMError) as info:
                await p.post(srv.url, b"hang")
            assert (info.value.reason, info.value.retryable) == ("timeout", True)
            task = asyncio.ensure_future(p.post(srv.url, b"hang"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the one connection's place is free again: a normal call goes through
            assert (await p.post(srv.url, b"fine"))[2] == b"ok"
            await p.close()
        assert srv.connections == 3  # each interrupted connection was dropped
    run(go())


def test_connections_closed_or_idle_too_long_are_not_reused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> int:

        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            _, _, body = await s.read_request(r)
            w.write(_reply(b"ok"))
            await w.drain()
            if body == b"then-close":
                return  # a server ending an idle keep-alive connection
            await s.read_request(r)
            w.write(_reply(b"ok"))
            await w.drain()
            await asyncio.sleep(5)

        async with RawServer(script) as srv:
            p = H1Poster(2, 5.0, {})
            await p.post(srv.url, b"then-close")
            await asyncio.sleep(0.1)  # the close arrives while the connection is idle
            assert (await p.post(srv.url, b"stay"))[2] == b"ok"  # on a fresh connection
            monkeypatch.setattr(h1, "KEEP_ALIVE", 0.05)
            await asyncio.sleep(0.1)  # open, but idle longer than we trust
            assert (await p.post(srv.url, b"stay"))[2] == b"ok"
            await p.close()
        return srv.connections

    assert run(go()) == 3


def test_tls_verifies_against_the_configured_roots(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    roots = tmp_path / "roots.pem"
    ca.cert_pem.write_to_path(str(roots))

    async def go(trusted: bool) -> Any:
        srv = RawServer(serve_each(lambda n: _reply(b"secret reply")))
        srv.ssl = server_ctx
        async with srv:
            if trusted:
                monkeypatch.setenv("SSL_CERT_FILE", str(roots))
            else:
                monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            p = H1Poster(1, 5.0, {})
            try:
                return await p.post(srv.url, b"{}")
            except LLMError as e:
                return e
            finally:
                await p.close()

    assert run(go(True))[2] == b"secret reply"
    err = run(go(False))  # certifi's roots do not know this CA
    assert isinstance(err, LLMError) and err.reason == "connection"
    assert "CERTIFICATE_VERIFY_FAILED" in err.message


def test_tls_sends_the_host_name_and_checks_the_certificate_names_it(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """By name, as real endpoints are reached: the name goes in SNI (which shared front
    ends route on) and the certificate must be for that name."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    roots = tmp_path / "roots.pem"
    ca.cert_pem.write_to_path(str(roots))
    monkeypatch.setenv("SSL_CERT_FILE", str(roots))

    async def go(cert_for: str) -> tuple[Any, list[str | None]]:
        names: list[str | None] = []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(cert_for).configure_cert(ctx)
        ctx.sni_callback = lambda sock, name, c: names.append(name)  # type: ignore[assignment]
        srv = RawServer(serve_each(lambda n: _reply(b"by name")))
        srv.ssl = ctx
        async with srv:
            url = srv.url.replace("127.0.0.1", "localhost")
            p = H1Poster(1, 5.0, {})
            try:
                return await p.post(url, b"{}"), names
            except LLMError as e:
                return e, names
            finally:
                await p.close()

    reply, names = run(go("localhost"))
    assert reply[2] == b"by name" and names == ["localhost"]
    err, _ = run(go("someone-else.test"))
    assert isinstance(err, LLMError) and "CERTIFICATE_VERIFY_FAILED" in err.message


def test_auto_goes_through_an_environment_proxy_on_aiohttp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    url = "https://api.example.com/v1/chat/completions"
    assert lean_kind("auto", url) == "h1"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert lean_kind("auto", url) == "aiohttp"
    assert lean_kind("aiohttp", url) == "aiohttp" and lean_kind("httpx", url) is None
    with pytest.raises(FeatdiscoError, match="proxy"):
        lean_kind("h1", url)
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert lean_kind("auto", url) == "h1"
    with pytest.raises(ValueError, match="unknown HTTP transport"):
        lean_kind("curl", url)


def test_header_values_cannot_smuggle_lines() -> None:
    async def go() -> None:
        with pytest.raises(ValueError, match="X-Team"):
            H1Poster(1, 5.0, {"X-Team": "r\r\nX-Admin: yes"})
    run(go())


def test_bytes_after_a_reply_drop_the_connection() -> None:
    """A server that sends more than one reply per request is out of step; the connection
    must not be reused, or the next call would read the stray reply as its own."""
    async def go() -> list[bytes]:
        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.read_request(r)
            w.write(_reply(b"first") + _reply(b"stray"))
            await w.drain()
            await asyncio.sleep(5)

        async with RawServer(script) as srv:
            p = H1Poster(1, 5.0, {})
            out = [(await p.post(srv.url, b"{}"))[2]]
            await asyncio.sleep(0.05)
            out.append((await p.post(srv.url, b"{}"))[2])
            await p.close()
        return out

    assert run(go()) == [b"first", b"first"]


@pytest.mark.parametrize("credentials", ["agent:pa%40ss@", ""])
def test_auto_sends_through_the_environment_proxy_with_its_credentials(
        monkeypatch: pytest.MonkeyPatch, credentials: str) -> None:
    """With HTTP_PROXY set, the openai backend's calls reach the origin only through the
    proxy (an absolute-form request line, the proxy's credentials as Proxy-Authorization),
    as the SDK's own client would send them."""
    import base64
    import json

    from featdisco.llm.openai import OpenAILLM
    from tests.llm.conftest import requests_for

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    content = json.dumps({"echo": "p", "features": ["Via a proxy"]})
    completion = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()

    async def go() -> RawServer:
        async with RawServer(serve_each(lambda n: _reply(completion))) as proxy:
            port = proxy.url.split(":")[2].split("/")[0]
            monkeypatch.setenv("HTTP_PROXY", f"http://{credentials}127.0.0.1:{port}")
            # the origin's name does not resolve: only the proxy can answer for it
            backend = OpenAILLM("m", base_url="http://llm.invalid:8080/v1", api_key="sk-x")
            resp = await backend.complete(requests_for(["p"])[0])
            await backend.aclose_loop()
            assert json.loads(resp.text)["features"] == ["Via a proxy"]
        return proxy

    proxy = run(go())
    line, headers, _ = proxy.requests[0]
    assert line == b"POST http://llm.invalid:8080/v1/chat/completions HTTP/1.1"
    # the proxy gets its own credentials, never the API key in their place
    assert headers.get("proxy-authorization") == (
        "Basic " + base64.b64encode(b"agent:pa@ss").decode() if credentials else None)
    assert headers["authorization"] == "Bearer sk-x"


def test_a_reply_read_a_byte_at_a_time() -> None:
    """Replies come in as many TCP reads as the network likes: here one byte each, a
    100 Continue, then a chunked, gzipped body with a trailer and a mixed-case
    Transfer-Encoding, after which the connection is still reused."""
    payload = b'{"choices": [{"message": {"content": "byte by byte"}}]}' * 20
    packed = gzip.compress(payload)
    wire = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n"
            b"Content-Encoding: gzip\r\n\r\n"
            + b"".join(b"%x\r\n%b\r\n" % (len(c), c)
                       for c in (packed[:len(packed) // 2], packed[len(packed) // 2:]))
            + b"0\r\nX-Trailer: t\r\n\r\n")

    async def go() -> int:
        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while True:
                await s.read_request(r)
                for i in range(len(wire)):
                    w.write(wire[i:i + 1])
                    await w.drain()

        async with RawServer(script) as srv:
            p = H1Poster(2, 5.0, {})
            for _ in range(2):
                status, _, body = await p.post(srv.url, b"{}")
                assert (status, body) == (200, payload)
            await p.close()
        return srv.connections

    assert run(go()) == 1


def test_an_empty_compressed_body_keeps_its_status() -> None:
    """A 429 with an empty body marked gzip is still a 429 with its Retry-After, not an
    unreadable reply."""
    async def go() -> tuple[int, dict[str, str], bytes]:
        wire = _reply(b"", "Content-Encoding: gzip", "Retry-After: 7",
                      status="429 Too Many Requests")
        async with RawServer(serve_each(lambda n: wire)) as srv:
            p = H1Poster(1, 5.0, {})
            reply = await p.post(srv.url, b"{}")
            await p.close()
        return reply

    status, headers, body = run(go())
    assert (status, headers["retry-after"], body) == (429, "7", b"")


def test_a_reset_cuts_a_close_delimited_reply_short() -> None:
    """A reply without a length ends at close, but only a clean close: a reset midway is a
    connection error, not a truncated success."""
    async def go() -> LLMError:
        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.read_request(r)
            w.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"choices": [{"mess')
            await w.drain()
            await asyncio.sleep(0.05)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()  # with SO_LINGER 0: an RST, not a FIN

        async with RawServer(script) as srv:
            p = H1Poster(1, 5.0, {})
            with pytest.raises(LLMError) as info:
                await p.post(srv.url, b"{}")
            await p.close()
        return info.value

    err = run(go())
    assert (err.reason, err.retryable) == ("connection", True)


def test_closing_the_client_fails_queued_and_running_calls_as_calls() -> None:
    async def go() -> list[BaseException]:
        async def script(s: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await s.read_request(r)
            await asyncio.sleep(30)

        async with RawServer(script) as srv:
            p = H1Poster(1, 30.0, {})
            running = asyncio.ensure_future(p.post(srv.url, b"{}"))
            queued = asyncio.ensure_future(p.post(srv.url, b"{}"))
            await asyncio.sleep(0.1)
            await p.close()
            out = await asyncio.gather(running, queued, return_exceptions=True)
        return list(out)

    for err in run(go()):
        assert isinstance(err, LLMError) and err.reason == "connection", err
        assert "closed" in err.message


def test_caller_headers_replace_the_sdks_whatever_their_case(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As httpx merges them: a default header named in another case replaces the SDK's,
    so the request carries one Authorization and one User-Agent, the caller's."""
    import json

    from featdisco.llm.openai import OpenAILLM
    from tests.llm.conftest import requests_for

    reply = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": json.dumps({"echo": "h", "features": ["F"]})}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()

    async def go() -> bytes:
        async with RawServer(serve_each(lambda n: _reply(reply))) as srv:
            base = srv.url.rsplit("/chat/completions", 1)[0]
            backend = OpenAILLM("m", base_url=base, api_key="sk-x", http_transport="h1",
                                default_headers={"authorization": "Bearer gateway",
                                                 "user-agent": "myapp/1"})
            await backend.complete(requests_for(["h"])[0])
            await backend.aclose_loop()
        return srv.heads[0].lower()

    head = run(go())
    assert head.count(b"\r\nauthorization:") == 1 and b"authorization: bearer gateway" in head
    assert head.count(b"\r\nuser-agent:") == 1 and b"user-agent: myapp/1" in head


def test_proxy_settings_as_httpx_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from featdisco.llm.transport import JsonPoster

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    url = "https://api.example.com/v1/chat/completions"
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")  # no scheme: http://
    assert h1.proxy_for(url) == "http://proxy.internal:3128"
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://all.internal:8080")  # the fallback for any scheme
    assert h1.proxy_for(url) == "http://all.internal:8080" and lean_kind("auto", url) == "aiohttp"
    monkeypatch.setenv("ALL_PROXY", "socks5://socks.internal:1080")  # only httpx speaks SOCKS
    assert lean_kind("auto", url) is None

    async def go() -> LLMError:  # nothing listens on port 9; the password stays out
        p = JsonPoster(1, 5.0, {}, ("sk-x",), proxy="http://agent:s3cr%40t@127.0.0.1:9")
        try:
            with pytest.raises(LLMError) as info:
                await p.post("http://llm.invalid/v1/chat/completions", b"{}")
        finally:
            await p.close()
        return info.value

    err = run(go())
    assert err.reason == "connection" and "s3cr" not in err.message
