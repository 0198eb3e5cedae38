"""Backend for any OpenAI-compatible chat-completions server, on the official SDK.

One module serves OpenAI, Gemini's compatible endpoint, vLLM, Ollama, llama.cpp server,
OpenRouter and Together, because they all speak the same wire protocol; what differs is
how much of structured output they support, hence ``json_mode``:

* ``schema`` (default): ``response_format`` of type ``json_schema`` with ``strict``; the
  server constrains decoding, so replies nearly always validate.
* ``object``: ``response_format`` ``json_object`` plus the schema in the prompt, for
  servers that guarantee JSON syntax but not a schema.
* ``prompt``: the schema in the prompt only, for servers that support neither.

The SDK stays the source of configuration — base URL (including ``OPENAI_BASE_URL``),
auth, organization and project (``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``), user agent and
any default headers — because that is what users and the providers' docs configure. But
it does not send the calls: building each request through the SDK and httpx cost ~0.5 ms
of client CPU a call, which at 1,000 concurrent calls of 200 ms made the client, not the
server, the limit. The lean path reads the SDK client's resolved settings once per event
loop and posts orjson bodies with a lean poster: h1.py's keep-alive HTTP/1.1 client
(~25 µs a call), or aiohttp's (transport.JsonPoster, ~100 µs) where an environment proxy
applies or httptools is missing. Settings only the SDK can apply (custom auth such as
workload identity, default query parameters) send through the SDK instead, as does
``http_transport='httpx'``; every path turns failures into the same :class:`LLMError`
through ``error_from_status`` in base.py.

The SDK's own retries are off: the engine retries every backend the same way, and two
retry layers multiply waits and hide failures. The HTTP pool is sized to the engine's
concurrency, since a pool smaller than the number of in-flight calls queues requests
inside the client where no limit or timeout of ours can see them.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import openai
import orjson

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import (
    LLMError,
    LLMRequest,
    LLMResponse,
    LoopClients,
    Usage,
    messages_with_schema,
    sdk_error,
    status_error,
)
from featdisco.llm.h1 import H1Poster, proxy_for
from featdisco.llm.transport import JsonPoster, check_transport, lean_kind, make_http_client

try:  # the SDK moved to httpx2; older releases take a plain httpx client
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as _httpx  # type: ignore[no-redef]

JsonMode = Literal["schema", "object", "prompt"]
JSON_MODES: tuple[str, ...] = ("schema", "object", "prompt")

# Reasoning models reject sampling parameters other than their defaults.
_NO_SAMPLING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class OpenAILLM:
    """Calls ``model`` at ``base_url`` (None: api.openai.com) with the chat-completions API.

    The API key comes from ``api_key`` or ``OPENAI_API_KEY``; it is never logged, and
    error texts are redacted before they leave this module. Servers that need no key
    (vLLM, Ollama) get a placeholder, as the SDK insists on one.
    """

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 json_mode: JsonMode = "schema", concurrency: int = 64, timeout: float = 60.0,
                 max_tokens_param: str | None = None,
                 default_headers: dict[str, str] | None = None,
                 http_transport: str = "auto") -> None:
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
        check_transport(http_transport)
        self.http_transport = http_transport  # 'auto': see transport.lean_kind
        self._lean: str | None = "pending" if http_transport != "httpx" else None
        self._config: openai.AsyncOpenAI | None = None  # the SDK client the lean path reads
        self._url = ""
        self._formats: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._clients: LoopClients[openai.AsyncOpenAI] = LoopClients(self._make_client, self.concurrency)
        # The lean posters hand out a free connection without scanning the others, so the
        # lean path needs no shards: one poster per loop with every connection.
        self._posters: LoopClients[H1Poster | JsonPoster] = LoopClients(
            self._make_poster, self.concurrency, shard_size=None)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAILLM(model={self.model!r}, base_url={self.base_url!r}, json_mode={self.json_mode!r})"

    def _make_client(self, connections: int) -> openai.AsyncOpenAI:
        http = make_http_client(connections, self.timeout, self.http_transport)
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                  timeout=http.timeout, http_client=http,
                                  default_headers=self._headers)

    def _sdk_config(self) -> openai.AsyncOpenAI | None:
        """The SDK client whose settings the lean path sends with, or None when those
        settings are more than a base URL and fixed headers (custom auth such as workload
        identity, default query parameters), which only the SDK itself can apply."""
        if self._config is None:
            self._config = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url,
                                              max_retries=0, timeout=self.timeout,
                                              default_headers=self._headers)
            self._url = str(self._config.base_url) + "chat/completions"  # the SDK keeps a trailing slash
        cfg = self._config
        if cfg.custom_auth is not None or cfg.default_query:
            return None
        return cfg

    def _make_poster(self, connections: int) -> H1Poster | JsonPoster:
        cfg = self._config
        assert cfg is not None
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
        if self._lean == "h1":
            return H1Poster(connections, self.timeout, headers, (self._api_key,))
        return JsonPoster(connections, self.timeout, headers, (self._api_key,),
                          proxy=proxy_for(self._url))

    def _params(self, request: LLMRequest) -> dict[str, Any]:
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
        content = orjson.dumps(self._params(request))
        if self._lean is not None and self._config is None:
            # first call (or first after aclose): settings only the SDK can apply go to it
            cfg = self._sdk_config()  # also resolves self._url
            self._lean = lean_kind(self.http_transport, self._url) if cfg is not None else None
        if self._lean:
            return await self._complete_lean(content)
        return await self._complete_sdk(content)

    async def _complete_lean(self, content: bytes) -> LLMResponse:
        shards = self._posters.shards()
        i, poster = shards.acquire()
        try:
            status, headers, raw = await poster.post(self._url, content)
        finally:
            shards.release(i)
        if not 200 <= status < 300:  # redirects are not followed, as on the SDK path
            raise status_error(status, headers, raw, (self._api_key,))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise LLMError("bad-response", f"unreadable reply from server: {type(e).__name__}",
                           retryable=True) from e
        return _read_completion(body)

    async def _complete_sdk(self, content: bytes) -> LLMResponse:
        shards = self._clients.shards()
        i, client = shards.acquire()
        try:
            # The SDK's generic post: its auth, URL, headers, timeouts and error classes,
            # without the typed create()'s recursive walk over the body (it descends into
            # every message and the whole JSON schema: ~0.6 ms a call), its deep copy of
            # the body, or pydantic models for the reply. Measured in bench/llm_engine.py.
            raw = await client.post("/chat/completions", content=content,
                                    cast_to=_httpx.Response,
                                    options={"headers": {"Content-Type": "application/json"}})
            body = orjson.loads(raw.content)
        except openai.APIError as e:
            raise sdk_error(openai, e, (self._api_key,)) from e
        except (_httpx.TransportError, orjson.JSONDecodeError) as e:
            # a connection dropped while reading the body, or a body that is not JSON
            raise LLMError("bad-response", f"unreadable reply from server: {type(e).__name__}",
                           retryable=True) from e
        finally:
            shards.release(i)
        return _read_completion(body)

    async def aclose_loop(self) -> None:
        await self._posters.aclose_loop()
        await self._clients.aclose_loop()

    async def aclose(self) -> None:
        await self._posters.aclose()
        await self._clients.aclose()
        if self._config is not None:  # it never sent anything; this just frees its pool
            await self._config.close()
            self._config = None


def _read_completion(body: Any) -> LLMResponse:
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
                       refusal=msg.get("refusal") or None)


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
