"""Backend for any OpenAI-compatible chat-completions server.

One module serves OpenAI, Gemini's compatible endpoint, vLLM, Ollama, llama.cpp server,
OpenRouter and Together, because they all speak the same wire protocol; what differs is
how much of structured output they support, hence ``json_mode``:

* ``schema`` (default): ``response_format`` of type ``json_schema`` with ``strict``; the
  server constrains decoding, so replies nearly always validate.
* ``object``: ``response_format`` ``json_object`` plus the schema in the prompt, for
  servers that guarantee JSON syntax but not a schema.
* ``prompt``: the schema in the prompt only, for servers that support neither.

How a call is sent: the official SDK stays the source of configuration (base URL,
including ``OPENAI_BASE_URL``; auth; organization and project from ``OPENAI_ORG_ID`` and
``OPENAI_PROJECT_ID``; user agent; default headers), because that is what users and the
providers' docs configure. The bytes go out on one aiohttp session per event loop
(:class:`JsonPoster`): the SDK's request building and httpx cost about four times the
client CPU per call (``bench/llm_engine.py``), which matters at a provider's top rate.
Settings only the SDK can apply (custom auth such as Azure AD tokens or workload
identity, default query parameters), or ``via_sdk=True``, send through the SDK instead.
Both paths turn failures into the same :class:`LLMError` (``error_from_status``).

The SDK's own retries are off: the engine retries every backend the same way, and two
retry layers multiply waits and hide failures. The connection pool is sized to the
engine's concurrency, since a pool smaller than the number of in-flight calls queues
requests inside the client where no limit or timeout of ours can see them.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

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
    sdk_error,
    status_error,
)

JsonMode = Literal["schema", "object", "prompt"]
JSON_MODES: tuple[str, ...] = ("schema", "object", "prompt")
# A reply larger than this is refused: a chat completion is kilobytes, and a misbehaving
# server or proxy must not be able to fill the client's memory.
MAX_REPLY_BYTES = 64 * 1024 * 1024

# The SDK's HTTP library's pool limits (httpx, or its successor in newer SDKs).
_Limits = type(openai.DEFAULT_CONNECTION_LIMITS)

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
                 default_headers: dict[str, str] | None = None, via_sdk: bool = False,
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
        self._headers = default_headers
        self._via_sdk = via_sdk
        self._use_sdk: bool | None = None
        self._max_reply = max_reply_bytes
        self._formats: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._sdk: PerLoop[openai.AsyncOpenAI] = PerLoop(self._make_sdk)
        self._posters: PerLoop[JsonPoster] = PerLoop(self._make_poster)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAILLM(model={self.model!r}, base_url={self.base_url!r}, json_mode={self.json_mode!r})"

    def _make_sdk(self) -> openai.AsyncOpenAI:
        http = openai.DefaultAsyncHttpxClient(limits=_Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency))
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout, default_headers=self._headers,
                                  http_client=http)

    def sends_via_sdk(self, client: openai.AsyncOpenAI) -> bool:
        """Whether the SDK must send the calls: asked for, settings beyond a base URL and
        fixed headers (custom auth such as Azure AD tokens, default query parameters) that
        only the SDK itself applies, or an environment proxy only its client follows."""
        return (self._via_sdk or client.custom_auth is not None or bool(client.default_query)
                or _proxy_only_sdk_follows(str(client.base_url)))

    def _make_poster(self) -> JsonPoster:
        cfg = self._sdk.get()
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
        url = str(cfg.base_url) + "chat/completions"  # the SDK keeps a trailing slash
        return JsonPoster(url, headers, self.concurrency, self.timeout, (self._api_key,),
                          self._max_reply)

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

    def _response_format(self, schema: dict[str, Any], name: str) -> dict[str, Any]:
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
        if self._use_sdk is None:  # settled on the first call: it depends on settings only
            self._use_sdk = self.sends_via_sdk(self._sdk.get())
        if self._use_sdk:
            return await self._complete_sdk(self._sdk.get(), params)
        status, headers, raw = await self._posters.get().post(orjson.dumps(params))
        if not 200 <= status < 300:  # redirects are not followed, as on the SDK path
            raise status_error(status, headers, raw, (self._api_key,))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise LLMError("bad-response", f"unreadable reply from server: {type(e).__name__}",
                           retryable=True) from e
        return read_completion(body)

    async def _complete_sdk(self, client: openai.AsyncOpenAI, params: dict[str, Any]
                            ) -> LLMResponse:
        # Every parameter but the two the SDK requires goes as extra_body, so a server's
        # own names (max_tokens_param) pass through untouched.
        rest = {k: v for k, v in params.items() if k not in ("model", "messages")}
        try:
            reply = await client.chat.completions.create(
                model=params["model"], messages=params["messages"], extra_body=rest)
        except openai.APIError as e:
            raise sdk_error(openai, e, (self._api_key,)) from e
        except ValueError as e:  # a body that is not JSON
            raise LLMError("bad-response", f"unreadable reply from server: {type(e).__name__}",
                           retryable=True) from e
        return read_completion(reply.model_dump())

    async def aclose(self) -> None:
        """Close the connections opened on the running loop."""
        await self._posters.aclose()
        await self._sdk.aclose()


def _proxy_only_sdk_follows(url: str) -> bool:
    """True when the environment sets a proxy for ``url`` that the SDK's client (httpx)
    uses and aiohttp would ignore: ``ALL_PROXY``, a SOCKS or https:// proxy, or a bare
    ``host:port``. Sending those calls on aiohttp would go around the proxy."""
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return False
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if proxy:
        return "://" not in proxy or urlsplit(proxy).scheme != "http"
    return bool(proxies.get("all"))


class JsonPoster:
    """POSTs prepared JSON bodies to one URL on one aiohttp session (one event loop).

    Proxies follow the environment as the SDK's client follows it (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``NO_PROXY``; credentials in the proxy URL or ``~/.netrc``; proxies
    only the SDK's client speaks send through the SDK, see ``sends_via_sdk``), read
    through aiohttp's own ``trust_env`` rules once, when the poster opens, rather than
    on every request. Through a proxy the headers go with each request, not on the
    session: aiohttp copies a session's headers into the CONNECT request it sends a
    proxy, and an Authorization header there would hand the API key to the proxy.

    A reply of any status comes back as (status, headers, body) for the caller to judge;
    one over ``max_reply`` bytes is an error. What never became a reply (timeouts,
    refused or reset connections, a body cut short) is raised as a retryable
    :class:`LLMError` with ``secrets`` redacted from its text.
    """

    def __init__(self, url: str, headers: Mapping[str, str], connections: int, timeout: float,
                 secrets: tuple[str, ...] = (), max_reply: int = MAX_REPLY_BYTES) -> None:
        self.url = url
        self._headers = dict(headers)
        self._max = max_reply
        self.proxy: URL | None = None
        auth: aiohttp.BasicAuth | None = None
        with contextlib.suppress(LookupError):  # LookupError: no proxy for this host
            self.proxy, auth = get_env_proxy_for_url(URL(url))
        # The proxy's credentials: on the CONNECT request for an https origin, on the
        # request itself (sent to the proxy in absolute form) for an http one.
        self._proxy_headers: dict[str, str] | None = None
        if auth is not None and url.startswith("https:"):
            self._proxy_headers = {"Proxy-Authorization": auth.encode()}
        elif auth is not None:
            self._headers["Proxy-Authorization"] = auth.encode()
        self._secrets = (*secrets, auth.password) if auth and auth.password else secrets
        # sock_read bounds each wait for bytes, as httpx's read timeout does on the SDK
        # path; the engine bounds the whole call on top.
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
