"""A lean HTTP/1.1 client for one origin: keep-alive connections on asyncio protocols.

Why not aiohttp: at 1,000 calls in flight on one event loop, aiohttp's request path
(request and response objects, timers, trace hooks, a stream reader per response) was
~100 µs of client CPU per call, more than everything else the engine does, and the wall
time of a run went with it (bench/llm_engine.py). An LLM backend needs much less: it POSTs
JSON to one URL over and over with the same headers. So this client writes a pre-built
request head plus the body to an idle keep-alive connection and lets httptools (the C
llhttp parser uvicorn uses) parse the reply, chunked or not, in the protocol's
``data_received``. No objects are made per call beyond the reply itself.

It handles what real endpoints do: TLS (SNI; certifi's roots when installed, or
``SSL_CERT_FILE``/``SSL_CERT_DIR``), gzip/deflate bodies, chunked and read-to-close
replies, ``Connection: close``, interim 1xx replies, and keep-alive connections the
server closes while idle (connections idle longer than :data:`KEEP_ALIVE` are not
reused; a call lost on one that closed anyway fails as a retryable connection error, as
a POST must: the client cannot know whether the server saw it). It does not do proxies
or redirects; the openai backend uses aiohttp where an environment proxy applies (see
:func:`proxy_for`).

Timeouts are per call, checked by one sweeper per pool rather than a timer per call; the
engine bounds each whole call on top. Errors come out as retryable :class:`LLMError` s
with secrets redacted, as :class:`~featdisco.llm.transport.JsonPoster`'s do.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.request
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from featdisco.llm.base import LLMError, redact

try:
    import httptools
except ImportError:  # pragma: no cover - optional; the backends fall back to aiohttp
    httptools = None  # type: ignore[assignment]

Reply = tuple[int, dict[str, str], bytes]


def available() -> bool:
    return httptools is not None


def proxy_for(url: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY`` ...) sets for
    ``url``, as httpx reads it (a bare ``host:port`` means ``http://host:port``); None for
    a direct connection."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host and urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _ssl_context() -> ssl.SSLContext:
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        ctx = ssl.create_default_context()  # reads both variables
    else:
        try:
            import certifi
            ctx = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx
            ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# Seconds an idle connection is trusted to stay open. Servers close idle keep-alive
# connections after their own timeout (uvicorn, which vLLM runs on, and llama.cpp's server
# after 5 s) and a request written as that happens is lost, so stay under the shortest.
KEEP_ALIVE = 4.0


class _Dead(Exception):
    """A connection ended, or its bytes could not be read, before a whole reply came."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.started = 0.0  # loop time the request in flight was sent; 0 when idle
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_done = False
        self._framed = False  # Content-Length or chunked: the reply's end is in the stream
        self.keep_alive = True

    # -- driven by the pool
    def send(self, data: bytes, waiter: asyncio.Future[Reply], now: float) -> None:
        assert self.transport is not None
        self._waiter, self.started = waiter, now
        self._head_done = self._framed = False
        self._headers, self._body = {}, []
        self.transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        w, self._waiter, self.started = self._waiter, None, 0.0
        if w is not None and not w.done():
            w.set_exception(exc)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the stream is out of step
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(_Dead(f"unreadable HTTP reply: {e}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if exc is None and self._head_done and not self._framed:  # a reply that ends at close
            self.on_message_complete()
            return
        why = f"{type(exc).__name__}: {exc}" if exc else "server closed the connection"
        self._fail(_Dead(why))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second reply in one read: the stream is out of step
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._head_done = True
        h = self._headers
        # a reply whose end is in the stream leaves the connection reusable; 204 and 304
        # have no body by definition
        self._framed = ("content-length" in h or "chunked" in h.get("transfer-encoding", "").lower()
                        or self._parser.get_status_code() in (204, 304))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # interim reply (100 Continue, 103 Early Hints): wait on
            self._headers, self._body, self._head_done = {}, [], False
            return
        self.keep_alive = self._parser.should_keep_alive() and self._framed
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        headers = self._headers
        w, self._waiter, self.started = self._waiter, None, 0.0
        if w is None or w.done():
            return
        coding = headers.get("content-encoding", "identity").strip().lower()
        if body and coding in ("gzip", "x-gzip", "deflate"):
            try:  # wbits 47: gzip or zlib header, detected
                body = zlib.decompress(body, 47) if coding != "deflate" else _inflate(body)
            except zlib.error as e:
                w.set_exception(_Dead(f"bad {coding} body: {e}"))
                return
        w.set_result((status, headers, body))


def _inflate(body: bytes) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error:  # some servers send raw deflate without the zlib header
        return zlib.decompress(body, -15)


class H1Poster:
    """POSTs prepared JSON bodies to one origin over up to ``connections`` keep-alive
    HTTP/1.1 connections; for one event loop (open it inside the running loop).

    Same contract as :class:`~featdisco.llm.transport.JsonPoster`: a reply of any status
    comes back as (status, headers with lower-case names, body) for the caller to judge;
    what never became a reply is raised as a retryable :class:`LLMError`.
    """

    def __init__(self, connections: int, timeout: float, headers: Mapping[str, str],
                 secrets: tuple[str | None, ...] = ()) -> None:
        if httptools is None:
            raise RuntimeError("httptools is not installed")
        self._limit = max(1, connections)
        self._timeout = timeout
        self._connect_timeout = min(10.0, timeout)
        self._secrets = secrets
        for k, v in headers.items():
            if any(c in f"{k}{v}" for c in "\r\n\0"):
                raise ValueError(f"header {k!r} holds a line break or NUL")
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items()
                              if k.lower() not in _OWN_HEADERS)
        self._loop = asyncio.get_running_loop()
        self._origin: tuple[str, str, int] | None = None
        self._heads: dict[str, bytes] = {}
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        # Race IPv6 and IPv4 addresses as aiohttp does, so that a host with a broken IPv6
        # route connects in 0.25 s rather than after a timeout; uvloop lacks the option.
        self._eyeballs: dict[str, Any] = (
            {"happy_eyeballs_delay": 0.25} if isinstance(self._loop, asyncio.BaseEventLoop)
            else {})
        self._closed = False

    def is_closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for c in [*self._idle, *self._busy]:
            c._fail(_Dead("the client was closed"))
            c.abort()
        self._idle.clear()
        self._busy.clear()
        for w in self._waiters:  # each wakes, sees the pool closed and fails as a call
            if not w.done():
                w.set_result(None)

    # -- requests
    def _head(self, url: str) -> bytes:
        """The request's bytes up to the Content-Length value, built once per URL."""
        head = self._heads.get(url)
        if head is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise LLMError("config", redact(f"cannot post to {url!r}: not an http(s) URL",
                                                self._secrets), retryable=False)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            origin = (parts.scheme, parts.hostname, port)
            if self._origin is None:
                self._origin = origin
                if parts.scheme == "https":
                    self._ssl = _ssl_context()
            elif origin != self._origin:
                raise ValueError("an H1Poster serves one origin")
            default = port == (443 if parts.scheme == "https" else 80)
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            host = host if default else f"{host}:{port}"
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\n{self._fixed}"
                    "Accept-Encoding: gzip, deflate\r\nContent-Type: application/json\r\n"
                    "Content-Length: ").encode("latin-1")
            self._heads[url] = head
        return head

    async def post(self, url: str, body: bytes) -> Reply:
        data = b"%b%d\r\n\r\n%b" % (self._head(url), len(body), body)
        conn = await self._acquire()
        waiter: asyncio.Future[Reply] = self._loop.create_future()
        ok = False
        try:
            conn.send(data, waiter, self._loop.time())
            reply = await waiter
            ok = True
            return reply
        except _Dead as e:
            raise LLMError("connection", self._text(f"connection error: {e}"),
                           retryable=True) from None
        except TimeoutError:
            raise LLMError("timeout", "request timed out", retryable=True) from None
        finally:
            self._release(conn, ok)

    def _text(self, message: str) -> str:
        return redact(message, self._secrets)[:500]

    # -- the pool
    async def _acquire(self) -> _Conn:
        while True:
            if self._closed:
                raise LLMError("connection", "client closed", retryable=True)
            while self._idle:
                c = self._idle.pop()  # newest first: the oldest are the likeliest to expire
                if c.closed or c.transport is None or c.transport.is_closing():
                    continue
                if self._loop.time() - c.idle_since > KEEP_ALIVE:
                    c.abort()  # servers drop idle connections; one may be closing right now
                    continue
                self._busy.add(c)
                return c
            if len(self._busy) + self._opening < self._limit:
                return await self._connect()
            w: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(w)
            try:
                await w
            except asyncio.CancelledError:
                if w.done() and not w.cancelled():
                    self._wake()  # pass on the turn it was given
                raise

    async def _connect(self) -> _Conn:
        assert self._origin is not None
        _, host, port = self._origin
        self._opening += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await self._loop.create_connection(
                    _Conn, host, port, ssl=self._ssl,
                    server_hostname=host if self._ssl else None, **self._eyeballs)
        except BaseException as e:
            self._opening -= 1
            self._wake()  # its place is free again
            if isinstance(e, TimeoutError):
                raise LLMError("timeout", self._text(f"connect to {host}:{port} timed out"),
                               retryable=True) from None
            if isinstance(e, OSError):
                raise LLMError("connection", self._text(
                    f"connection error: cannot connect to {host}:{port}: "
                    f"{type(e).__name__}: {e}"), retryable=True,
                    unreachable=not isinstance(e, ssl.SSLError)) from None
            raise
        self._opening -= 1
        self._busy.add(conn)
        if self._sweeper is None:
            self._sweep()
        return conn

    def _release(self, conn: _Conn, ok: bool) -> None:
        self._busy.discard(conn)
        if ok and conn.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = self._loop.time()
            self._idle.append(conn)
        else:  # a failed, cancelled or closing connection carries nothing more
            conn.abort()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _sweep(self) -> None:
        """Fail calls that have waited longer than the timeout, then look again soon."""
        now = self._loop.time()
        for c in list(self._busy):
            if c.started and now - c.started > self._timeout:
                c._fail(TimeoutError())
                c.abort()
        self._sweeper = None if self._closed else self._loop.call_later(
            min(1.0, self._timeout / 4), self._sweep)


# Headers the client writes itself (or that describe the connection, not the call).
_OWN_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding",
                          "connection", "accept-encoding", "keep-alive", "te", "upgrade"})

