"""An httpx transport on aiohttp, so the official SDKs keep their API but not httpcore's cost.

The openai and anthropic SDKs send through an httpx client; they accept any transport.
Profiling the engine at 256-1,000 concurrent calls showed about two thirds of the
client's CPU in httpcore, h11 and anyio (the default transport) — ~1.2 ms a call, which
caps one process near 800 calls/s. aiohttp's C-accelerated HTTP/1.1 client does the same
work in about half the CPU (bench/llm_engine.py). The SDK still builds the request, adds
auth, reads the status and raises its own error classes; only the bytes on the wire move
through aiohttp. Where aiohttp is not installed the backends fall back to httpx's own.

The openai backend goes further: even over aiohttp, the SDK's request building and the
httpx objects around each call were two thirds of the client's CPU, so it posts its
prepared JSON itself and keeps the SDK only for configuration (see openai.py), on h1.py's
lean client or, where an environment proxy applies, on aiohttp (:class:`JsonPoster`);
:func:`lean_kind` chooses. The anthropic backend still sends through its SDK on
:class:`AiohttpTransport`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMError, redact

try:
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as _httpx  # type: ignore[no-redef]

try:
    import aiohttp
except ImportError:  # pragma: no cover - optional speed-up
    aiohttp = None  # type: ignore[assignment]

# Headers aiohttp sets itself (it asks only for encodings it can decode), and response headers that no longer describe the body once
# aiohttp has read and decompressed it.
_DROP_REQUEST = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection",
                           b"accept-encoding"})
_DROP_RESPONSE = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def available() -> bool:
    return aiohttp is not None


class AiohttpTransport(_httpx.AsyncBaseTransport):
    """One aiohttp session (opened lazily, inside the running loop) with ``connections``
    keep-alive connections. Errors come out as httpx exceptions, which the SDKs map to
    their own timeout / connection errors."""

    def __init__(self, connections: int) -> None:
        if aiohttp is None:
            raise RuntimeError("aiohttp is not installed")
        self._connections = connections
        self._session: Any = None

    def _open(self) -> Any:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections,
                                             limit_per_host=self._connections,
                                             ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",))
        return self._session

    async def handle_async_request(self, request: _httpx.Request) -> _httpx.Response:
        t = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.get("connect"),
                                        sock_read=t.get("read"))
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in request.headers.raw if k.lower() not in _DROP_REQUEST]
        try:
            async with self._open().request(request.method, str(request.url), headers=headers,
                                            data=request.content, timeout=timeout,
                                            allow_redirects=False) as r:
                body = await r.read()
                out = [(k, v) for k, v in r.headers.items() if k.lower() not in _DROP_RESPONSE]
                return _httpx.Response(r.status, headers=out, content=body, request=request)
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise _httpx.ReadTimeout(f"timed out: {e}", request=request) from e
        except aiohttp.ClientConnectorError as e:
            raise _httpx.ConnectError(f"cannot connect: {e}", request=request) from e
        except (aiohttp.ClientError, OSError) as e:  # resets, disconnects, bad payloads
            raise _httpx.ReadError(f"{type(e).__name__}: {e}", request=request) from e

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


TRANSPORTS = ("auto", "h1", "aiohttp", "httpx")


def check_transport(transport: str) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown HTTP transport {transport!r}; choose {', '.join(TRANSPORTS)}")


def lean_kind(transport: str, url: str) -> str | None:
    """Which lean poster a backend sends ``url``'s calls on, or None for its SDK's own path.

    'auto' takes the h1 client (h1.py) when httptools is installed and no environment
    proxy applies to ``url``, else aiohttp's (which goes through the proxy), else the SDK.
    'h1' and 'aiohttp' insist and fail when they cannot serve; 'httpx' keeps the SDK path.
    """
    from featdisco.llm import h1

    check_transport(transport)
    if transport == "httpx":
        return None
    if transport == "aiohttp" or (transport == "auto" and not h1.available()):
        if aiohttp is None:
            if transport == "aiohttp":
                raise FeatdiscoError("http_transport='aiohttp' needs aiohttp installed")
            return None
        return "aiohttp"
    proxy = h1.proxy_for(url)
    if proxy is not None and urlsplit(proxy).scheme not in ("http", "https"):
        return None  # a SOCKS proxy: only the SDK's httpx client speaks it
    if transport == "h1":
        if not h1.available():
            raise FeatdiscoError("http_transport='h1' needs httptools installed")
        if proxy is not None:
            raise FeatdiscoError(f"http_transport='h1' cannot go through the proxy the "
                                 f"environment sets for {urlsplit(url).hostname}; use auto "
                                 "or aiohttp")
        return "h1"
    if proxy is None:
        return "h1"
    return "aiohttp" if aiohttp is not None else None


class JsonPoster:
    """POSTs prepared JSON bodies on one aiohttp session, no SDK in between.

    For one event loop (open it inside the running loop). The headers and timeouts are
    fixed when it opens, because a backend sends the same ones on every call; with the
    SDK and the httpx shim gone, a call costs about what aiohttp itself costs. A reply of
    any status comes back as (status, headers, body) for the caller to judge; what never
    became a reply (timeouts, refused or reset connections, a body cut short) is raised
    as a retryable :class:`LLMError` with ``secrets`` redacted from its text.
    """

    def __init__(self, connections: int, timeout: float, headers: Mapping[str, str],
                 secrets: tuple[str | None, ...] = (), proxy: str | None = None) -> None:
        if aiohttp is None:
            raise RuntimeError("aiohttp is not installed")
        self._secrets = secrets
        # The proxy is resolved once (h1.proxy_for) and passed with each request: aiohttp's
        # trust_env looks the environment and ~/.netrc up again on every request, which
        # tripled the client's CPU per call at 1,000 in flight.
        self._proxy, proxy_auth = _split_proxy(proxy)
        if proxy and (password := urlsplit(proxy).password):  # never in an error message
            self._secrets = (*secrets, password, unquote(password))
        # Through a proxy the headers go with each request, not on the session: aiohttp
        # builds the proxy's own headers from the session's, and a session Authorization
        # header would reach the proxy as Proxy-Authorization — the API key, handed over.
        self._headers = dict(headers) if self._proxy else None
        # The proxy's credentials: on the CONNECT request for an https origin, on the
        # request itself (sent to the proxy in absolute form) for an http one.
        self._connect_headers = proxy_auth
        self._plain_headers = {**headers, **(proxy_auth or {})} if self._proxy else None
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                         ttl_dns_cache=300)
        # sock_read bounds each wait for bytes, as httpx's read timeout does on the SDK
        # path; the engine bounds the whole call on top.
        self._session = aiohttp.ClientSession(
            connector=connector, headers=None if self._proxy else dict(headers),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout),
                                          sock_read=timeout))

    def is_closed(self) -> bool:
        return bool(self._session.closed)

    async def close(self) -> None:
        await self._session.close()

    async def post(self, url: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        try:
            if self._proxy is None:
                call = self._session.post(url, data=body, allow_redirects=False)
            elif url.startswith("https:"):
                call = self._session.post(url, data=body, allow_redirects=False,
                                          headers=self._headers, proxy=self._proxy,
                                          proxy_headers=self._connect_headers)
            else:
                call = self._session.post(url, data=body, allow_redirects=False,
                                          headers=self._plain_headers, proxy=self._proxy)
            async with call as r:
                return r.status, r.headers, await r.read()
        except TimeoutError as e:  # aiohttp's own timeouts subclass it too
            raise LLMError("timeout", "request timed out", retryable=True) from e
        except (aiohttp.ClientError, OSError) as e:  # refused, reset, cut short
            unreachable = (isinstance(e, aiohttp.ClientConnectorError)
                           and not isinstance(e, aiohttp.ClientSSLError))
            raise LLMError("connection", redact(f"connection error: {type(e).__name__}: {e}",
                                                self._secrets)[:500], retryable=True,
                           unreachable=unreachable) from e


def _split_proxy(proxy: str | None) -> tuple[str | None, dict[str, str] | None]:
    """A proxy URL without its credentials, and those as a Proxy-Authorization header."""
    if not proxy:
        return None, None
    parts = urlsplit(proxy)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise FeatdiscoError(f"the proxy set in the environment is not a valid URL: "
                             f"{parts.scheme}://{parts.hostname}:…") from None
    if parts.username is None:
        return proxy, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    user = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    auth = {"Proxy-Authorization": "Basic " + base64.b64encode(user).decode("ascii")}
    return parts._replace(netloc=netloc).geturl(), auth


def make_http_client(connections: int, timeout: float, transport: str = "auto") -> Any:
    """An httpx client for the SDKs: on aiohttp when ``transport`` is 'aiohttp' (or 'auto'
    or 'h1', which has no SDK transport, and aiohttp is installed), else httpx's own pool
    of ``connections``."""
    check_transport(transport)
    t = _httpx.Timeout(timeout, connect=min(10.0, timeout))
    if transport == "aiohttp" or (transport in ("auto", "h1") and available()):
        return _httpx.AsyncClient(transport=AiohttpTransport(connections), timeout=t)
    limits = _httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return _httpx.AsyncClient(limits=limits, timeout=t)
