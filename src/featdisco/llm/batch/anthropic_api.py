"""Anthropic's Message Batches API on the official SDK: create a batch of
``{custom_id, params}`` items, poll ``processing_status`` until ``ended``, then stream the
results JSONL from ``results_url``.

Limits (Anthropic's documented ones): 100,000 requests or 256 MB per batch, whichever
comes first; the byte limit keeps a margin for the request envelope.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from featdisco.llm.anthropic import AnthropicLLM, read_message
from featdisco.llm.base import LLMError, LLMRequest, LLMResponse, error_from_status, redact
from featdisco.llm.batch.api import BatchState

_ERROR_REASONS = {"invalid_request_error": "bad-request", "authentication_error": "auth",
                  "permission_error": "forbidden", "not_found_error": "not-found",
                  "rate_limit_error": "rate-limit", "overloaded_error": "server-error",
                  "api_error": "server-error", "request_too_large": "too-large"}


class AnthropicBatchAPI:
    """Message Batches for an :class:`AnthropicLLM` (same model, key and params)."""

    provider = "anthropic"

    def __init__(self, backend: AnthropicLLM, *, max_requests: int = 100_000,
                 max_bytes: int = 250_000_000, timeout: float = 600.0) -> None:
        self.backend = backend
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._key = backend.api_key
        self._sdk = backend.sdk
        self._client = self._sdk.AsyncAnthropic(api_key=self._key, base_url=backend.base_url,
                                                max_retries=3, timeout=timeout)

    def line(self, key: str, request: LLMRequest) -> bytes:
        return json.dumps({"custom_id": key, "params": self.backend.request_params(request)},
                          ensure_ascii=False).encode()

    async def submit(self, lines: list[bytes]) -> str:
        sdk = self._sdk
        try:  # never retried: a retried create could start a second paid batch
            batch = await self._client.with_options(max_retries=0).messages.batches.create(
                requests=[json.loads(x) for x in lines])
        except sdk.APIStatusError as e:
            raise error_from_status(e.status_code, e.response.headers, str(e.message),
                                    (self._key,)) from e
        return str(batch.id)

    async def poll(self, batch_id: str) -> BatchState:
        b = await self._client.messages.batches.retrieve(batch_id)
        return BatchState(b.processing_status == "ended", b.processing_status, "batch-missing")

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, LLMResponse | LLMError]]:
        async for item in await self._client.messages.batches.results(batch_id):
            yield item.custom_id, _read_result(item.result, self._key)

    async def aclose(self) -> None:
        await self._client.close()


def _read_result(result: Any, key: str) -> LLMResponse | LLMError:
    kind = result.type
    if kind == "succeeded":
        return read_message(result.message)
    if kind == "errored":
        e = result.error.error
        reason = _ERROR_REASONS.get(e.type, e.type)
        return LLMError(reason, redact(f"{e.type}: {e.message}", (key,))[:500], retryable=True)
    reason = {"canceled": "batch-cancelled", "expired": "batch-expired"}.get(kind, kind)
    return LLMError(reason, f"the batch request was {kind}", retryable=True)




__all__ = ["AnthropicBatchAPI", "error_from_status", "read_message"]
