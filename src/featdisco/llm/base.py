"""The one protocol every LLM backend implements, and the types that cross it.

Backends only turn a request into a reply over their transport; concurrency, limits,
retries, validation, caching and cost live in the engine, once, for all of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One call. ``schema`` is a JSON Schema the reply must satisfy (None: free text).

    ``prompt_version`` names the versioned prompt file the messages came from; it is part
    of the cache key so that editing a prompt invalidates exactly its cached replies.
    ``schema`` is not to be changed in place once sent: its validator, cache-key JSON and
    wire form are kept per schema object, since a stage sends one object many times.
    """

    messages: tuple[ChatMessage, ...]
    schema: Mapping[str, object] | None = None
    schema_name: str = "reply"
    sampling: Sampling = field(default_factory=Sampling)
    prompt_version: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class LLMResponse:
    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    refusal: str | None = None  # the provider's own refusal field, when it has one
    # The model the reply says answered it: providers resolve aliases ("gpt-4o") to
    # snapshots ("gpt-4o-2024-08-06"), and that, not the name asked for, is what was paid for.
    model: str | None = None


class LLMError(Exception):
    """A failed call. ``retryable`` tells the engine whether backing off may help;
    ``retry_after`` carries the server's Retry-After in seconds when it gave one;
    ``unreachable`` says no connection to the server could be made at all (refused, no
    such host), which, before any call has got through, means a wrong URL or a server that
    is down rather than a passing fault."""

    def __init__(self, reason: str, message: str, *, retryable: bool,
                 retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.unreachable = unreachable


@runtime_checkable
class LLMBackend(Protocol):
    """A transport to one model. ``name`` is the backend (``openai``, ``anthropic``,
    ``local``), ``model`` the model it calls; both are part of every cache key.

    A backend whose connections belong to an event loop sets ``closes_per_loop = True``:
    its ``aclose`` then frees only the running loop's connections and it stays usable (the
    engine calls it when it ends its loop). Without it, ``aclose`` is the owner's to call
    (the in-process model frees its weights)."""

    name: str
    model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...


# --- helpers shared by the HTTP backends (added with the engine; the names above are stable) ---

_SECRET_RE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{3,}|sk_[A-Za-z0-9_\-*]{8,}|AIza[0-9A-Za-z_\-]{20,})")


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Remove API keys from text that may be logged or cached.

    Providers echo a masked key in auth errors ("Incorrect API key provided: sk-ab****yz");
    even the masked form leaks the key's ends, so any key-shaped token goes, as does any
    secret the caller names verbatim.
    """
    for s in secrets:
        if s:
            text = text.replace(s, "[redacted]")
    return _SECRET_RE.sub("[redacted]", text)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait as the server asked: ``retry-after-ms``, then ``retry-after`` as
    seconds or as an HTTP date. None when absent or unreadable (the engine then backs off
    on its own schedule)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


_STATUS_REASONS = {
    400: "bad-request", 401: "auth", 402: "payment-required", 403: "forbidden",
    404: "not-found", 408: "request-timeout", 409: "conflict", 413: "too-large",
    422: "unprocessable", 429: "rate-limit",
}


def error_from_status(status: int, headers: Mapping[str, str] | None, message: str,
                      secrets: tuple[str | None, ...] = ()) -> LLMError:
    """Map an HTTP status to an :class:`LLMError`, the same way for every provider.

    Retry only what waiting can fix: rate limits, timeouts, conflicts and server errors;
    a bad request or a bad key fails the same way every time.
    """
    retryable = status in (408, 409, 429) or status >= 500
    reason = _STATUS_REASONS.get(status, "server-error" if status >= 500 else f"http-{status}")
    return LLMError(reason, f"HTTP {status}: {redact(message, secrets)[:500]}",
                    retryable=retryable,
                    retry_after=parse_retry_after(headers) if retryable else None)


def status_error(status: int, headers: Mapping[str, str] | None, body: bytes,
                 secrets: tuple[str | None, ...] = ()) -> LLMError:
    """An error reply read off the wire (the aiohttp path, which has no SDK exception to
    hand to :func:`sdk_error`) as an :class:`LLMError`: the same text the SDKs give
    ("Error code: 429 - <the body's error.message>"), the same mapping."""
    message = f"Error code: {status}"
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error", data) if isinstance(data, dict) else None
    text = err.get("message") if isinstance(err, dict) else None
    if isinstance(text, str) and text:
        message += f" - {text}"
    return error_from_status(status, headers, message, secrets)


def schema_instruction(schema: Mapping[str, object]) -> str:
    """The words that ask for JSON when the transport cannot enforce a schema itself."""
    return ("Reply with a single JSON value and nothing else (no prose, no code fences). "
            "It must conform to this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False, sort_keys=True))


def messages_with_schema(messages: tuple[ChatMessage, ...],
                         schema: Mapping[str, object]) -> list[dict[str, str]]:
    """Messages as plain dicts, with the schema instruction appended to the system prompt
    (or added as one) — for prompt-only JSON mode."""
    out = [{"role": m.role, "content": m.content} for m in messages]
    instr = schema_instruction(schema)
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instr}
    else:
        out.insert(0, {"role": "system", "content": instr})
    return out


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class PerLoop(Generic[C]):
    """One client for each event loop that uses it.

    A client's connections belong to the loop that opened them. The engine runs every
    stage of a run on one loop, so a backend normally holds one client for its whole life;
    a caller that drives it from loops of its own (``asyncio.run`` per call, a notebook's
    helper thread) gets one per loop. :meth:`aclose` closes the running loop's client and
    forgets those whose loops have ended.
    """

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._clients: dict[asyncio.AbstractEventLoop, C] = {}

    def get(self) -> C:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            self._forget_ended()
            client = self._clients[loop] = self._make()
        return client

    def _forget_ended(self) -> None:
        self._clients = {lp: c for lp, c in self._clients.items() if not lp.is_closed()}

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        self._forget_ended()
        if client is not None:
            await client.close()


def sdk_error(sdk: Any, exc: Exception, secrets: tuple[str, ...]) -> LLMError:
    """An official SDK's exception as an :class:`LLMError`. The openai and anthropic SDKs
    share one exception hierarchy (timeout ⊂ connection error ⊂ API error; status error ⊂
    API error), so one mapping serves both backends."""
    if isinstance(exc, sdk.APITimeoutError):
        return LLMError("timeout", "request timed out", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return LLMError("connection", redact(f"connection error: {exc}", secrets), retryable=True)
    if isinstance(exc, sdk.APIStatusError):
        return error_from_status(exc.status_code, exc.response.headers, str(exc.message), secrets)
    return LLMError("api-error", redact(f"{type(exc).__name__}: {exc}", secrets), retryable=False)
