"""A minimal OpenAI-compatible ``/v1/embeddings`` server on 127.0.0.1, for the api: tests.

Vectors are a deterministic function of the text (from its sha256) and deliberately not
unit length, so the tests can check that the backend normalises them. Every request is
recorded (inputs, model, encoding format, authorization header) so tests can count
batches and see exactly what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DIM = 8


def fake_vector(text: str) -> np.ndarray:
    """The server's vector for ``text``: 8 values in [-4, 4) from its sha256."""
    raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIM], dtype=np.uint8)
    return (raw.astype(np.float32) / 32.0) - 4.0


class EmbeddingsServer:
    """``with EmbeddingsServer(api_key="sk-test") as srv:`` then use ``srv.base_url``."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                auth = self.headers.get("authorization", "")
                with outer._lock:
                    outer.requests.append({**body, "authorization": auth})
                if outer.api_key is not None and auth != f"Bearer {outer.api_key}":
                    shown = auth.removeprefix("Bearer ")
                    masked = shown[:3] + "****" + shown[-2:]
                    self._reply(401, {"error": {
                        "message": f"Incorrect API key provided: {masked}.",
                        "type": "invalid_request_error", "code": "invalid_api_key"}})
                    return
                if not self.path.endswith("/embeddings"):
                    self._reply(404, {"error": {"message": "no such route"}})
                    return
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = []
                for i, t in enumerate(texts):
                    v = fake_vector(t)
                    emb: Any = (base64.b64encode(v.astype("<f4").tobytes()).decode()
                                if body.get("encoding_format") == "base64" else v.tolist())
                    data.append({"object": "embedding", "index": i, "embedding": emb})
                data.reverse()  # servers may answer out of order; the index says where
                self._reply(200, {"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})

            def _reply(self, status: int, obj: dict[str, Any]) -> None:
                raw = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> EmbeddingsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
