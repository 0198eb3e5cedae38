"""A test-only server for the two batch protocols, over real HTTP on 127.0.0.1.

* OpenAI Batch: ``POST /v1/files`` (multipart, purpose ``batch``), ``POST /v1/batches``,
  ``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content`` (output and error files).
* Anthropic Message Batches: ``POST /v1/messages/batches``, ``GET
  /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results`` (JSONL, named by
  the batch's ``results_url``).

Each item is answered by the same scripted handlers as the online fake
(:mod:`tests.fakes.openai_server`), so a test can compare batch and online results. A batch
reports itself in progress for ``polls_before_done`` polls, then finished. Handler replies
with a non-200 status become error-file lines (OpenAI) or ``errored`` results (Anthropic);
``Reply(action="expire")`` leaves an item unanswered and the batch ``expired``. Creates
are counted per protocol, so a test can prove that a restart did not submit twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.openai_server import FakeRequest, Handler, Reply, echo_features


class _State:
    def __init__(self, handler: Handler, api_key: str | None, polls_before_done: int) -> None:
        self.handler = handler
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.creates: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.ids = itertools.count(1)

    def answer(self, path: str, body: dict[str, Any]) -> Reply:
        users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
        key = users[0] if users and isinstance(users[0], str) else json.dumps(users[:1])
        with self.lock:
            self.hits[key] += 1
            attempt = self.hits[key]
        try:
            return self.handler(FakeRequest(path, body, {}, key, attempt))
        except Exception as e:
            return Reply(status=500, raw_body=json.dumps({"error": {"message": repr(e)}}).encode())


def _completion(body: dict[str, Any], reply: Reply, n: int) -> dict[str, Any]:
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    out = len(reply.content or "")
    return {"id": f"chatcmpl-b{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": reply.content,
                                     "refusal": reply.refusal}}],
            "usage": {"prompt_tokens": prompt // 4 + 1, "completion_tokens": out // 4 + 1,
                      "total_tokens": (prompt + out) // 4 + 2}}


def _message(params: dict[str, Any], reply: Reply, n: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    stop = "end_turn"
    forced = (params.get("tool_choice") or {}).get("name")
    try:
        data = json.loads(reply.content or "")
    except ValueError:
        data = None
    if forced and isinstance(data, dict):
        content.append({"type": "tool_use", "id": f"toolu_b{n}", "name": forced, "input": data})
        stop = "tool_use"
    elif reply.content:
        content.append({"type": "text", "text": reply.content})
    if reply.refusal:
        stop = "refusal"
    return {"id": f"msg_b{n}", "type": "message", "role": "assistant",
            "model": params.get("model", "fake"), "content": content, "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": len(json.dumps(params)) // 4,
                      "output_tokens": len(reply.content or "") // 4 + 1}}


def _error_message(reply: Reply) -> str:
    try:
        return str(json.loads(reply.raw_body or b"{}")["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {reply.status}"


class _Http(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        key = self.server.state.api_key
        if key is None or self.headers.get("authorization") == f"Bearer {key}" \
                or self.headers.get("x-api-key") == key:
            return True
        self._send(401, {"error": {"message": "bad key", "type": "authentication_error"}})
        return False

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def do_POST(self) -> None:
        if not self._authorised():
            return
        body = self._body()
        path = self.path.split("?")[0]
        if path.endswith("/files"):
            self._upload(body)
        elif path.endswith("/messages/batches"):
            self._anthropic_create(json.loads(body))
        elif path.endswith("/batches"):
            self._openai_create(json.loads(body))
        else:
            self._send(404, {"error": {"message": f"no route {path}"}})

    def do_GET(self) -> None:
        if not self._authorised():
            return
        s = self.server.state
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[-1] == "content" and parts[-3] == "files" and parts[-2] in s.files:
            self._send(200, None, s.files[parts[-2]])
        elif parts[-1] == "results" and parts[-2] in s.batches:
            self._send(200, None, s.batches[parts[-2]]["results"])
        elif parts[-1] in s.batches:
            self._poll(s.batches[parts[-1]])
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    # -- OpenAI
    def _upload(self, body: bytes) -> None:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"content-type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + body)
        fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                  for p in msg.iter_parts()}
        if fields.get("purpose") != b"batch" or "file" not in fields:
            self._send(400, {"error": {"message": "need purpose=batch and a file"}})
            return
        s = self.server.state
        fid = f"file-{next(s.ids)}"
        s.files[fid] = fields["file"]
        self._send(200, {"id": fid, "object": "file", "bytes": len(fields["file"]),
                         "created_at": int(time.time()), "filename": "batch.jsonl",
                         "purpose": "batch", "status": "processed"})

    def _openai_create(self, req: dict[str, Any]) -> None:
        s = self.server.state
        data = s.files.get(req.get("input_file_id", ""))
        if data is None or req.get("endpoint") != "/v1/chat/completions" \
                or req.get("completion_window") != "24h":
            self._send(400, {"error": {"message": "bad batch request"}})
            return
        s.creates["openai"] += 1
        out: list[bytes] = []
        errors: list[bytes] = []
        expired = False
        for n, raw in enumerate(data.splitlines()):
            line = json.loads(raw)
            reply = s.answer(line["url"], line["body"])
            if reply.action == "expire":
                expired = True
                continue
            row: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": line["custom_id"],
                                   "error": None}
            if reply.status == 200 and reply.action is None:
                row["response"] = {"status_code": 200, "request_id": f"req_{n}",
                                   "body": _completion(line["body"], reply, n)}
                out.append(json.dumps(row).encode())
            else:
                row["response"] = {"status_code": reply.status if reply.status != 200 else 500,
                                   "request_id": f"req_{n}",
                                   "body": {"error": {"message": _error_message(reply)}}}
                errors.append(json.dumps(row).encode())
        bid = f"batch_{next(s.ids)}"
        files = {}
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                fid = f"file-{next(s.ids)}"
                s.files[fid] = b"\n".join(rows) + b"\n"
                files[name] = fid
        s.batches[bid] = {"kind": "openai", "polls": 0, "files": files,
                          "final": "expired" if expired else "completed", "n": len(out) + len(errors),
                          "obj": {"id": bid, "object": "batch", "endpoint": req["endpoint"],
                                  "input_file_id": req["input_file_id"], "completion_window": "24h",
                                  "created_at": int(time.time()), "metadata": req.get("metadata"),
                                  "errors": None, "output_file_id": None, "error_file_id": None}}
        self._send(200, {**s.batches[bid]["obj"], "status": "validating"})

    # -- Anthropic
    def _anthropic_create(self, req: dict[str, Any]) -> None:
        s = self.server.state
        s.creates["anthropic"] += 1
        bid = f"msgbatch_{next(s.ids)}"
        lines: list[bytes] = []
        for n, item in enumerate(req.get("requests", [])):
            reply = s.answer("/v1/messages", item["params"])
            result: dict[str, Any]
            if reply.action == "expire":
                result = {"type": "expired"}
            elif reply.status == 200 and reply.action is None:
                result = {"type": "succeeded", "message": _message(item["params"], reply, n)}
            else:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error" if reply.status >= 500 else "invalid_request_error",
                    "message": _error_message(reply)}}}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}).encode())
        host, port = self.server.server_address[:2]
        s.batches[bid] = {"kind": "anthropic", "polls": 0, "results": b"\n".join(lines) + b"\n",
                          "n": len(lines), "obj": {
                              "id": bid, "type": "message_batch", "created_at": "2026-01-01T00:00:00Z",
                              "expires_at": "2026-01-02T00:00:00Z", "archived_at": None,
                              "cancel_initiated_at": None, "ended_at": None,
                              "results_url": None}}
        self._send(200, self._anthropic_obj(s.batches[bid], False, host, port))

    def _anthropic_obj(self, b: dict[str, Any], done: bool, host: Any, port: int) -> dict[str, Any]:
        n = b["n"]
        return {**b["obj"], "processing_status": "ended" if done else "in_progress",
                "request_counts": {"processing": 0 if done else n, "succeeded": n if done else 0,
                                   "errored": 0, "canceled": 0, "expired": 0},
                "results_url": f"http://{host}:{port}/v1/messages/batches/{b['obj']['id']}/results"
                if done else None}

    def _poll(self, b: dict[str, Any]) -> None:
        s = self.server.state
        b["polls"] += 1
        done = b["polls"] > s.polls_before_done
        if b["kind"] == "anthropic":
            host, port = self.server.server_address[:2]
            self._send(200, self._anthropic_obj(b, done, host, port))
            return
        status = b["final"] if done else "in_progress"
        files = b["files"] if done else {}
        self._send(200, {**b["obj"], **files, "status": status,
                         "request_counts": {"total": b["n"], "completed": b["n"], "failed": 0}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FakeBatchServer:
    """The fake in a background thread: ``with FakeBatchServer(handler) as srv: ...``;
    ``srv.base_url`` ends in ``/v1`` (OpenAI), ``srv.root_url`` does not (Anthropic)."""

    def __init__(self, handler: Handler = echo_features, *, api_key: str | None = None,
                 polls_before_done: int = 1) -> None:
        self.state = _State(handler, api_key, polls_before_done)
        self._server: _Server | None = None

    @property
    def root_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    @property
    def creates(self) -> Counter[str]:
        return self.state.creates

    @property
    def hits(self) -> Counter[str]:
        return self.state.hits

    def set_handler(self, handler: Handler) -> None:
        self.state.handler = handler

    def start(self) -> FakeBatchServer:
        self._server = _Server(("127.0.0.1", 0), _Http)
        self._server.state = self.state
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeBatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
