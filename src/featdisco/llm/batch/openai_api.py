"""OpenAI's Batch API on the official SDK: upload a JSONL file (purpose ``batch``), create a
batch on ``/v1/chat/completions`` with a 24 h window, poll it, then read its output and
error files. Any OpenAI-compatible server that implements ``/v1/files`` and ``/v1/batches``
works the same way.

Limits (OpenAI's documented ones): 50,000 requests and 200 MB per input file. The byte
limit here keeps a margin below 200 MB for the multipart envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import openai
import orjson

from featdisco.llm.base import LLMError, LLMRequest, LLMResponse, error_from_status, redact
from featdisco.llm.batch.api import BatchState
from featdisco.llm.openai import OpenAILLM, read_completion

ENDPOINT: Final = "/v1/chat/completions"
_TERMINAL = {"completed": "batch-missing", "failed": "batch-failed",
             "expired": "batch-expired", "cancelled": "batch-cancelled"}


class OpenAIBatchAPI:
    """Batches for an :class:`OpenAILLM` (same model, key, base URL and request body)."""

    provider = "openai"

    def __init__(self, backend: OpenAILLM, *, max_requests: int = 50_000,
                 max_bytes: int = 190_000_000, timeout: float = 600.0) -> None:
        self.backend = backend
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._key = backend.api_key
        # Control calls are few; the SDK may retry polls and downloads, never a create
        # (see submit), since a retried create can start a second paid batch.
        self._client = openai.AsyncOpenAI(api_key=self._key, base_url=backend.base_url,
                                          max_retries=3, timeout=timeout)

    def line(self, key: str, request: LLMRequest) -> bytes:
        return orjson.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                             "body": self.backend.request_params(request)})

    async def submit(self, lines: list[bytes]) -> str:
        try:
            f = await self._client.files.create(
                file=("featdisco-batch.jsonl", b"\n".join(lines) + b"\n", "application/jsonl"),
                purpose="batch")
            batch = await self._client.with_options(max_retries=0).batches.create(
                input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h",
                metadata={"client": "featdisco"})
        except openai.APIStatusError as e:
            raise error_from_status(e.status_code, e.response.headers, e.message,
                                    (self._key,)) from e
        return batch.id

    async def poll(self, batch_id: str) -> BatchState:
        b = await self._client.batches.retrieve(batch_id)
        if b.status not in _TERMINAL:
            return BatchState(False, b.status)
        detail = None
        if b.errors is not None and b.errors.data:
            detail = "; ".join(redact(e.message or e.code or "", (self._key,))
                               for e in b.errors.data[:5])
        return BatchState(True, b.status, _TERMINAL[b.status], detail)

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, LLMResponse | LLMError]]:
        b = await self._client.batches.retrieve(batch_id)
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            content = await self._client.files.content(file_id)
            for raw in content.content.splitlines():
                if raw.strip():
                    yield _read_line(orjson.loads(raw), self._key)

    async def aclose(self) -> None:
        await self._client.close()


def _read_line(item: dict[str, Any], key: str) -> tuple[str, LLMResponse | LLMError]:
    """One output- or error-file line as a reply or an error."""
    cid = str(item.get("custom_id"))
    resp = item.get("response") or {}
    err = item.get("error")
    status = int(resp.get("status_code") or 0)
    body = resp.get("body") or {}
    if status == 200 and not err:
        try:
            return cid, read_completion(body)
        except LLMError as e:
            return cid, e
    if status:
        msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return cid, error_from_status(status, None, str(msg or body), (key,))
    info = err or {}
    return cid, LLMError(str(info.get("code") or "batch-error"),
                         redact(str(info.get("message") or "no result"), (key,)), retryable=True)
