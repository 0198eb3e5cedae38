"""A test-only OpenAI-compatible HTTP server on 127.0.0.1.

It speaks enough real HTTP/1.1 (keep-alive, Content-Length bodies) for the official
``openai`` SDK to talk to it unchanged, so the tests exercise the real client, the real
connection pool and the real error classes. It is a plain asyncio protocol rather than a
web framework because the benchmark drives it at thousands of requests per second and
its CPU must not be the bottleneck being measured.

Replies come from a scripted handler (request -> :class:`Reply`); faults are replies too
(429 with Retry-After, 500, connection reset, hang, malformed bodies). Every request is
counted per key (the first user message) so tests can prove what was, and was not, sent.

Run in-process with :class:`FakeOpenAIServer` (a thread) or as a subprocess:
``python -m tests.fakes.openai_server --port 0 --latency 0.2`` prints ``READY <port>``.
As a subprocess it runs on uvloop when installed, and ``--reuse-port`` lets several
processes serve one port; bodies go through orjson. About 35-60 us of CPU a request, so
that in the benchmark, where it shares the machine's cores with the client, it is not
what is being measured.
``GET /_stats`` returns the hit counters; ``POST /_reset`` clears them.

Shaped like a provider for the benchmark: ``--latency-p99`` makes the latency lognormal
(``--latency`` its median; drawn in order of admission from ``--seed``, so a benchmark can
replay the same draws), and ``--limit-rps`` admits at most that many requests a second
(a token bucket holding one second's worth), answering the rest at once with 429 and
Retry-After, as providers enforce their requests-per-minute limits.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

FAULTS = ("rate_limit", "server_error", "reset", "hang", "malformed_json",
          "schema_break", "refusal", "empty", "empty_list")


@dataclass
class FakeRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    key: str  # the first user message: what the tests count hits by
    attempt: int  # 1 for the first time this key arrives, 2 for the second, ...


@dataclass
class Reply:
    """What the server does with one request. ``content`` is the assistant message;
    ``raw_body`` replaces the whole HTTP body; ``action`` 'reset' drops the connection
    with a TCP RST and 'hang' never answers."""

    content: str | None = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None
    refusal: str | None = None
    finish_reason: str = "stop"
    action: str | None = None
    delay: float = 0.0
    model: str | None = None  # the model the reply names (default: the one asked for)


Handler = Callable[[FakeRequest], Reply]


def echo_features(req: FakeRequest) -> Reply:
    """The default script: a valid ``{"echo", "features"}`` object derived from the prompt,
    so a test can check that each reply went back to the request that asked for it."""
    digest = hashlib.sha256(req.key.encode()).hexdigest()
    feats = [f"Feature {chr(97 + int(c, 16))} about the text" for c in digest[:3]]
    return Reply(content=orjson.dumps({"echo": req.key, "features": feats}).decode())


def fault_reply(kind: str, req: FakeRequest, retry_after_ms: int = 20) -> Reply:
    """The reply for one injected fault kind (see ``FAULTS``)."""
    if kind == "rate_limit":
        return Reply(status=429, headers={"retry-after": "1", "retry-after-ms": str(retry_after_ms)},
                     raw_body=_error_body("Rate limit reached", "rate_limit_exceeded"))
    if kind == "server_error":
        return Reply(status=500, raw_body=_error_body("The server had an error", "server_error"))
    if kind == "reset":
        return Reply(action="reset")
    if kind == "hang":
        return Reply(action="hang")
    if kind == "malformed_json":
        return Reply(content='{"echo": "' + req.key[:10] + '", "features": ["Unclosed')
    if kind == "schema_break":
        return Reply(content=json.dumps({"echo": req.key, "features": "not a list"}))
    if kind == "refusal":
        return Reply(content="I'm sorry, but I can't help with that request.")
    if kind == "empty":
        return Reply(content="")
    if kind == "empty_list":  # valid JSON, but no features: breaks minItems
        return Reply(content=json.dumps({"echo": req.key, "features": []}))
    raise ValueError(f"unknown fault {kind!r}")


def faulty(base: Handler, rate: float, seed: int = 0, kinds: tuple[str, ...] = FAULTS,
           retry_after_ms: int = 20) -> Handler:
    """Wrap a handler so that a deterministic ``rate`` share of attempts fail.

    The draw depends on (seed, key, attempt), so a rerun replays the same faults."""
    def handler(req: FakeRequest) -> Reply:
        rng = random.Random(f"{seed}|{req.key}|{req.attempt}")
        if rng.random() < rate:
            return fault_reply(rng.choice(kinds), req, retry_after_ms)
        return base(req)
    return handler


def _error_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()


def _embedding(text: str, dim: int) -> list[float]:
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error"}


class _State:
    def __init__(self, handler: Handler, latency: float, api_key: str | None,
                 embed_dim: int) -> None:
        self.handler = handler
        self.latency = latency
        self.api_key = api_key
        self.embed_dim = embed_dim
        self.hits: Counter[str] = Counter()
        self.total = 0
        self.counter = 0
        self.draw: Callable[[], float] | None = None  # a latency per admitted request
        self.limit: RateLimit | None = None
        self.rate_limited = 0
        self.admitted = 0
        self.admit_times: list[float] = []


def lognormal_latency(median: float, p99: float, seed: int = 0) -> Callable[[], float]:
    """Latencies with this median and 99th percentile, drawn in order from ``seed``."""
    rng = random.Random(seed)
    mu, sigma = math.log(median), math.log(p99 / median) / 2.3263478740408408
    return lambda: rng.lognormvariate(mu, sigma)


class RateLimit:
    """``rps`` requests a second, bursts up to one second's worth: a provider's limit."""

    def __init__(self, rps: float) -> None:
        self.rps = rps
        self.level = rps
        self.stamp = time.monotonic()

    def admit(self) -> float:
        """0 when admitted, else the seconds until a request would be."""
        now = time.monotonic()
        self.level = min(self.rps, self.level + (now - self.stamp) * self.rps)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rps


class _Conn(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self.s = state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + n:
                return
            body = bytes(self.buf[end + 4:end + 4 + n])
            del self.buf[:end + 4 + n]
            method, path = head[0].split(" ")[:2]
            self._dispatch(method, path, headers, body)

    def _dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        s = self.s
        if path == "/_stats":
            self._send(200, {}, json.dumps({
                "total": s.total, "hits": s.hits, "rate_limited": s.rate_limited,
                "admitted": s.admitted, "admit_times": s.admit_times}).encode())
            return
        if path == "/_reset":
            s.hits.clear()
            s.total = 0
            self._send(200, {}, b"{}")
            return
        authorised = (headers.get("authorization") == f"Bearer {s.api_key}"
                      or headers.get("x-api-key") == s.api_key)
        if s.api_key is not None and not authorised:
            self._send(401, {}, _error_body("Incorrect API key provided: sk-****", "invalid_api_key"))
            return
        try:
            payload = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            self._send(400, {}, _error_body("bad json body", "invalid_request"))
            return
        if path.endswith("/embeddings"):
            self._embeddings(payload)
        elif path.endswith("/chat/completions"):
            self._chat(payload, headers, path)
        elif path.endswith("/v1/messages"):
            self._chat(payload, headers, path, anthropic=True)
        else:
            self._send(404, {}, _error_body(f"no route {method} {path}", "not_found"))

    def _embeddings(self, payload: dict[str, Any]) -> None:
        inputs = payload.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i, "embedding": _embedding(t, self.s.embed_dim)}
                for i, t in enumerate(texts)]
        tokens = sum(len(t) // 4 + 1 for t in texts)
        body = {"object": "list", "data": data, "model": payload.get("model", "fake"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        self.loop.call_later(self.s.latency, self._send, 200, {}, json.dumps(body).encode())

    def _chat(self, payload: dict[str, Any], headers: dict[str, str], path: str,
              anthropic: bool = False) -> None:
        s = self.s
        latency = s.latency
        if s.limit is not None and (wait := s.limit.admit()) > 0:
            s.rate_limited += 1
            self._send(429, {"retry-after-ms": str(math.ceil(wait * 1000)),
                             "retry-after": str(math.ceil(wait))},
                       _error_body("Rate limit reached for requests", "rate_limit_exceeded"))
            return
        if s.limit is not None or s.draw is not None:
            s.admitted += 1
            s.admit_times.append(time.monotonic())
        if s.draw is not None:
            latency = s.draw()
        msgs = payload.get("messages") or []
        users = [m.get("content") for m in msgs if m.get("role") == "user"]
        first = users[0] if users else ""  # a repair re-ask counts against its original
        key = first if isinstance(first, str) else json.dumps(first)
        s.hits[key] += 1
        s.total += 1
        req = FakeRequest(path, payload, headers, key, s.hits[key])
        try:
            reply = s.handler(req)
        except Exception as e:  # a broken script should show up as a 500, not a hang
            reply = Reply(status=500, raw_body=_error_body(f"handler failed: {e!r}", "fake_error"))
        if reply.action == "hang":
            return
        delay = latency + reply.delay
        if reply.action == "reset":
            self.loop.call_later(delay, self._reset)
            return
        body = reply.raw_body
        if body is None and anthropic:
            body = self._anthropic_body(payload, reply)
        if body is None:
            s.counter += 1
            prompt_chars = sum(len(str(m.get("content", ""))) for m in msgs)
            out_chars = len(reply.content or "")
            message: dict[str, Any] = {"role": "assistant", "content": reply.content,
                                       "refusal": reply.refusal}
            body = orjson.dumps({
                "id": f"chatcmpl-{s.counter}", "object": "chat.completion",
                "created": int(time.time()), "model": reply.model or payload.get("model", "fake"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": reply.finish_reason, "logprobs": None}],
                "usage": {"prompt_tokens": prompt_chars // 4 + 1,
                          "completion_tokens": out_chars // 4 + 1,
                          "total_tokens": (prompt_chars + out_chars) // 4 + 2},
            })
        self.loop.call_later(delay, self._send, reply.status, reply.headers, body)

    def _anthropic_body(self, payload: dict[str, Any], reply: Reply) -> bytes:
        """A Messages API reply: a tool_use block when a tool was forced and the scripted
        content is a JSON object, else a text block."""
        self.s.counter += 1
        content: list[dict[str, Any]] = []
        stop = "end_turn"
        forced = (payload.get("tool_choice") or {}).get("name")
        try:
            data = json.loads(reply.content or "")
        except ValueError:
            data = None
        if forced and isinstance(data, dict):
            content.append({"type": "tool_use", "id": f"toolu_{self.s.counter}",
                            "name": forced, "input": data})
            stop = "tool_use"
        elif reply.content:
            content.append({"type": "text", "text": reply.content})
        if reply.refusal:
            stop = "refusal"
        return json.dumps({
            "id": f"msg_{self.s.counter}", "type": "message", "role": "assistant",
            "model": reply.model or payload.get("model", "fake"), "content": content, "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": len(json.dumps(payload)) // 4,
                      "output_tokens": len(reply.content or "") // 4 + 1}}).encode()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"x-request-id: req-{self.s.total}\r\n{extra}\r\n")
        t.write(head.encode("latin-1") + body)

    def _reset(self) -> None:
        t = self.transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: close() sends RST, as a crashed proxy would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.abort()


async def _serve(state: _State, port: int, reuse_port: bool = False) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Conn(state), "127.0.0.1", port, backlog=4096,
                                    reuse_address=True, reuse_port=reuse_port or None)


class FakeOpenAIServer:
    """The fake in a background thread: ``with FakeOpenAIServer(handler) as srv:`` then
    point a client at ``srv.base_url``. ``srv.hits[key]`` counts requests per key."""

    def __init__(self, handler: Handler = echo_features, *, latency: float = 0.0,
                 api_key: str | None = None, embed_dim: int = 384, port: int = 0) -> None:
        self._state = _State(handler, latency, api_key, embed_dim)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> Counter[str]:
        return self._state.hits

    @property
    def total(self) -> int:
        return self._state.total

    def set_handler(self, handler: Handler) -> None:
        self._state.handler = handler

    def reset(self) -> None:
        self._state.hits.clear()
        self._state.total = 0

    def start(self) -> FakeOpenAIServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(_serve(self._state, self._port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible server (tests only).")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0,
                   help="seconds per reply (the median, with --latency-p99)")
    p.add_argument("--latency-p99", type=float, default=None,
                   help="lognormal latencies with this 99th percentile")
    p.add_argument("--limit-rps", type=float, default=None,
                   help="admit at most this many requests a second; 429 + Retry-After beyond")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--handler", default=None,
                   help="module:function returning a Reply for each request (default: echo)")
    p.add_argument("--reuse-port", action="store_true",
                   help="bind with SO_REUSEPORT, so that several processes started on the same "
                        "port share its connections (the benchmark's server on two cores); each "
                        "process keeps its own hit counters")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop (auto: uvloop when installed)")
    args = p.parse_args(argv)
    handler: Handler = echo_features
    if args.handler:
        import importlib

        module, _, func = args.handler.partition(":")
        handler = getattr(importlib.import_module(module), func)
    if args.fault_rate > 0:
        handler = faulty(handler, args.fault_rate, args.seed)
    state = _State(handler, args.latency, args.api_key, 384)
    if args.latency_p99:
        state.draw = lognormal_latency(args.latency, args.latency_p99, args.seed)
    if args.limit_rps:
        state.limit = RateLimit(args.limit_rps)

    async def run() -> None:
        server = await _serve(state, args.port, args.reuse_port)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    factory = None
    if args.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                raise
        else:
            factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
