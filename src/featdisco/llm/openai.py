"""Backend for any OpenAI-compatible chat-completions server.

One module serves OpenAI, Gemini's compatible endpoint, vLLM, Ollama, llama.cpp server,
OpenRouter and Together, because they all speak the same wire protocol; what differs is
how much of structured output they support, hence ``json_mode``:

* ``schema`` (default): ``response_format`` of type ``json_schema`` with ``strict``; the
  server constrains decoding, so replies nearly always validate.
* ``object``: ``response_format`` ``json_object`` plus the schema in the prompt, for
  servers that guarantee JSON syntax but not a schema.
* ``prompt``: the schema in the prompt only, for servers that support neither.

How a call is sent, one way for every call: the official SDK is the source of
configuration (base URL, including ``OPENAI_BASE_URL``; auth; organization and project from
``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID``; user agent; default headers), because that is
what users and the providers' docs configure, read from its public properties once per
event loop. The bytes go out on one aiohttp session per event loop (:class:`JsonPoster`).
The SDK's own send path, even on its aiohttp transport, costs about three times the client
CPU per call (its request options, httpx2 request and response objects on top of aiohttp;
``bench/llm_engine.py``), which matters at a provider's top rate. Failures become
:class:`LLMError` through ``status_error``, the same mapping the SDK-based backends use.

The connection pool is sized to the engine's concurrency, since a pool smaller than the
number of in-flight calls queues requests inside the client where no limit or timeout of
ours can see them. Nothing here retries: the engine retries every backend the same way.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
import openai
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import (
    LLMError,
    LLMRequest,
    LLMResponse,
    PerLoop,
    Usage,
    messages_with_schema,
    redact,
    status_error,
)

JsonMode = Literal["schema", "object", "prompt"]
JSON_MODES: tuple[str, ...] = ("schema", "object", "prompt")
# A reply larger than this is refused: a chat completion is kilobytes, and a misbehaving
# server or proxy must not be able to fill the client's memory.
MAX_REPLY_BYTES = 64 * 1024 * 1024

# Reasoning models reject sampling parameters other than their defaults.
_NO_SAMPLING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class OpenAILLM:
    """Calls ``model`` at ``base_url`` (None: api.openai.com) with the chat-completions API.

    The API key comes from ``api_key`` or ``OPENAI_API_KEY``; it is never logged, and
    error texts are redacted before they leave this module. Servers that need no key
    (vLLM, Ollama) get a placeholder, as the SDK insists on one.
    """

    name = "openai"
    closes_per_loop = True  # aclose frees the running loop's connections; reopened on use

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 json_mode: JsonMode = "schema", concurrency: int = 64, timeout: float = 60.0,
                 max_tokens_param: str | None = None,
                 default_headers: dict[str, str] | None = None,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        if json_mode not in JSON_MODES:
            raise FeatdiscoError(f"unknown JSON mode {json_mode!r}; choose one of "
                                 f"{', '.join(JSON_MODES)}")
        self.model = model
        self.base_url = base_url
        self.json_mode: JsonMode = json_mode
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and base_url is None:
            raise FeatdiscoError("the openai backend needs OPENAI_API_KEY (or --base-url for a "
                                 "local OpenAI-compatible server)")
        self._api_key = key or "not-needed"
        official = base_url is None or "api.openai.com" in base_url
        # OpenAI's newer models take max_completion_tokens only; most other servers
        # know only max_tokens.
        self._max_tokens_param = max_tokens_param or (
            "max_completion_tokens" if official else "max_tokens")
        self._omit_sampling = official and model.startswith(_NO_SAMPLING_PREFIXES)
        self._max_reply = max_reply_bytes
        self._formats: dict[tuple[int, str], tuple[Mapping[str, object], dict[str, Any]]] = {}
        # Configuration only: nothing is sent through it (see the module's docstring), so
        # its HTTP client reads no proxy settings (env_proxy does, for the one that sends).
        self._config = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=base_url, max_retries=0, timeout=timeout,
            default_headers=default_headers,
            http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
        self.url = str(self._config.base_url) + "chat/completions"  # it keeps a trailing /
        self._proxy = env_proxy(self.url)  # checked now: a bad proxy fails before any call
        self._posters: PerLoop[JsonPoster] = PerLoop(self._make_poster)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAILLM(model={self.model!r}, base_url={self.base_url!r}, json_mode={self.json_mode!r})"

    def _make_poster(self) -> JsonPoster:
        cfg = self._config
        # What the SDK's own request would carry (auth, organization and project, user
        # agent, platform and any default_headers), read inside the running loop so that
        # X-Stainless-Async names it; Omit markers dropped, as the SDK drops them.
        # Merged without regard to case, the later value winning, as httpx merges them:
        # a caller's "authorization" or "user-agent" replaces the SDK's, not joins it.
        merged: dict[str, tuple[str, str]] = {}
        for k, v in {**cfg.auth_headers, **cfg.default_headers}.items():
            if isinstance(v, str):
                merged[k.lower()] = (k, v)
            else:  # an Omit marker removes the header, whatever its case
                merged.pop(k.lower(), None)
        headers = dict(merged.values())
        headers["X-Stainless-Retry-Count"] = "0"
        headers["X-Stainless-Read-Timeout"] = str(self.timeout)
        return JsonPoster(self.url, headers, self.concurrency, self.timeout, (self._api_key,),
                          self._max_reply, proxy=self._proxy)

    @property
    def api_key(self) -> str:
        """The key calls go with (the batch API's too); never logged."""
        return self._api_key

    def request_params(self, request: LLMRequest) -> dict[str, Any]:
        """The chat-completion body for ``request``: one call's, and a batch line's."""
        s = request.sampling
        params: dict[str, Any] = {"model": self.model, self._max_tokens_param: s.max_tokens}
        if not self._omit_sampling:
            params["temperature"] = s.temperature
            if s.top_p is not None:
                params["top_p"] = s.top_p
        if s.seed is not None:
            params["seed"] = s.seed
        schema = request.schema
        if schema is None:
            params["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        elif self.json_mode == "schema":
            params["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            params["response_format"] = self._response_format(schema, request.schema_name)
        else:
            params["messages"] = messages_with_schema(request.messages, schema)
            if self.json_mode == "object":
                params["response_format"] = {"type": "json_object"}
        return params

    def _response_format(self, schema: Mapping[str, object], name: str) -> dict[str, Any]:
        # Built once per schema object (kept alive beside its id, so the id cannot be
        # reused), as the validator and the cache key's JSON are: a stage sends one schema
        # thousands of times.
        hit = self._formats.get((id(schema), name))
        if hit is None or hit[0] is not schema:
            if len(self._formats) > 64:
                self._formats.clear()
            hit = (schema, {"type": "json_schema", "json_schema": {
                "name": name, "schema": strict_schema(schema), "strict": True}})
            self._formats[(id(schema), name)] = hit
        return hit[1]

    async def complete(self, request: LLMRequest) -> LLMResponse:
        params = self.request_params(request)
        status, headers, raw = await self._posters.get().post(orjson.dumps(params))
        if not 200 <= status < 300:  # redirects are not followed: a POST must not be replayed
            raise status_error(status, headers, raw, (self._api_key,))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise LLMError("bad-response", f"unreadable reply from server: {type(e).__name__}",
                           retryable=True) from e
        return read_completion(body)

    async def aclose(self) -> None:
        """Close the connections opened on the running loop."""
        await self._posters.aclose()


EnvProxy = tuple[URL, aiohttp.BasicAuth | None] | None


def env_proxy(url: str) -> EnvProxy:
    """The environment's proxy for ``url`` and its credentials, by aiohttp's own rules
    (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``; credentials in the proxy URL or
    ``~/.netrc``): the rules its ``trust_env`` applies, read once here rather than on each
    request, where they cost two thread hops and a ~/.netrc read a call. A proxy aiohttp
    cannot speak (SOCKS, https://, a bare host:port) is refused with a clear error rather
    than used wrongly, and so is ``ALL_PROXY``, which aiohttp ignores: calls must not go
    around a proxy the user set."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:  # none for this host, NO_PROXY names it, or one aiohttp ignores
        set_for = set(urllib.request.getproxies()) & {URL(url).scheme, "all"}
        if set_for and not _bypassed(url):
            raise FeatdiscoError(
                f"the environment sets a proxy for {URL(url).host} that featdisco's HTTP client "
                "(aiohttp) cannot use (ALL_PROXY, or an https:// proxy URL): set HTTPS_PROXY / "
                "HTTP_PROXY as http://host:port (or NO_PROXY for this host)") from None
        return None
    if proxy.scheme != "http":
        kind = f"a {proxy.scheme}:// proxy" if proxy.scheme else "not a URL (no http://)"
        raise FeatdiscoError(f"the environment's proxy for {URL(url).host} is {kind}, and "
                             "featdisco's HTTP client (aiohttp) speaks to http:// proxies "
                             "only: set HTTPS_PROXY / HTTP_PROXY as http://host:port")
    return proxy, auth


def _bypassed(url: str) -> bool:
    """Whether NO_PROXY names ``url``'s host (the stdlib's test, which aiohttp uses too)."""
    host = URL(url).host
    return host is not None and bool(urllib.request.proxy_bypass(host))


class JsonPoster:
    """POSTs prepared JSON bodies to one URL on one aiohttp session (one event loop).

    ``proxy`` is the environment's proxy as :func:`env_proxy` resolved it (None: direct).
    Through a proxy the headers go with each request, not on the session: aiohttp copies
    a session's headers into the CONNECT request it sends a proxy, and an Authorization
    header there would hand the API key to the proxy.

    A reply of any status comes back as (status, headers, body) for the caller to judge;
    one over ``max_reply`` bytes is an error. What never became a reply (timeouts,
    refused or reset connections, a body cut short) is raised as a retryable
    :class:`LLMError` with ``secrets`` redacted from its text.
    """

    def __init__(self, url: str, headers: Mapping[str, str], connections: int, timeout: float,
                 secrets: tuple[str, ...] = (), max_reply: int = MAX_REPLY_BYTES,
                 proxy: EnvProxy = None) -> None:
        self.url = url
        self._headers = dict(headers)
        self._max = max_reply
        self.proxy: URL | None = proxy[0] if proxy else None
        auth = proxy[1] if proxy else None
        # The proxy's credentials: on the CONNECT request for an https origin, on the
        # request itself (sent to the proxy in absolute form) for an http one.
        self._proxy_headers: dict[str, str] | None = None
        if auth is not None and url.startswith("https:"):
            self._proxy_headers = {"Proxy-Authorization": auth.encode()}
        elif auth is not None:
            self._headers["Proxy-Authorization"] = auth.encode()
        self._secrets = (*secrets, auth.password) if auth and auth.password else secrets
        # sock_read bounds each wait for bytes, as the SDK's read timeout does; the
        # engine bounds the whole call on top.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                           ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout),
                                          sock_read=timeout),
            skip_auto_headers=("User-Agent",), headers=None if self.proxy else self._headers)
        if self.proxy is None:  # on the session: not merged again into every request
            self._headers = {}

    async def close(self) -> None:
        await self._session.close()

    async def post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with self._session.post(self.url, data=body, headers=self._headers or None,
                                          allow_redirects=False, proxy=self.proxy,
                                          proxy_headers=self._proxy_headers) as r:
                if r.content_length is not None and r.content_length > self._max:
                    raise self._too_large()
                buf = bytearray()
                async for chunk in r.content.iter_any():
                    buf += chunk
                    if len(buf) > self._max:
                        raise self._too_large()
                return r.status, r.headers, bytes(buf)
        except TimeoutError as e:  # aiohttp's own timeouts subclass it too
            raise LLMError("timeout", "request timed out", retryable=True) from e
        except (aiohttp.ClientError, OSError) as e:  # refused, reset, cut short
            unreachable = (isinstance(e, aiohttp.ClientConnectorError)
                           and not isinstance(e, aiohttp.ClientSSLError))
            raise LLMError("connection", redact(f"connection error: {type(e).__name__}: {e}",
                                                self._secrets)[:500], retryable=True,
                           unreachable=unreachable) from e

    def _too_large(self) -> LLMError:
        return LLMError("reply-too-large", f"the server's reply is over {self._max:,} bytes, "
                        "more than any chat completion needs; refused (a misconfigured server "
                        "or proxy?)", retryable=False)


def read_completion(body: Any) -> LLMResponse:
    """The first choice of a chat-completion body, tolerating servers that omit fields."""
    try:
        choice = body["choices"][0]
        msg = choice.get("message") or {}
    except (KeyError, IndexError, TypeError) as e:
        raise LLMError("bad-response", "the reply had no choices", retryable=True) from e
    u = body.get("usage") or {}
    content = msg.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return LLMResponse(text=content or "",
                       usage=Usage(int(u.get("prompt_tokens") or 0),
                                   int(u.get("completion_tokens") or 0)),
                       finish_reason=choice.get("finish_reason"),
                       refusal=msg.get("refusal") or None,
                       model=body.get("model") if isinstance(body.get("model"), str) else None)


# Size and range bounds that OpenAI's strict mode rejects ("... is not permitted") on some
# models: the server gets the shape only; the engine still validates every reply against
# the full schema and repairs what breaks it, and the prompt states the bounds in words.
_STRICT_UNSUPPORTED = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minimum",
                                 "maximum", "pattern", "format", "uniqueItems"})


def strict_schema(schema: Any) -> Any:
    """``schema`` without the keywords strict structured outputs may refuse."""
    if isinstance(schema, dict):
        return {k: strict_schema(v) for k, v in schema.items()
                if k not in _STRICT_UNSUPPORTED or not isinstance(v, int | float | str | bool)}
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema
