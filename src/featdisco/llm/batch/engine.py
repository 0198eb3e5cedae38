"""``--batch``: the same requests as the online engine, sent through a provider batch API.

Half the price, results within 24 hours. Every request goes out with ``custom_id`` equal to
its cache key, so results map straight back into the :class:`CallCache`, and a rerun (with
or without ``--batch``) reuses them. Only requests not already cached as successes, and not
already inside a batch this cache has submitted, are sent. Requests are cut into chunks
within the provider's request-count and byte limits. Results are checked with the online
engine's own validation (:func:`check_reply`); a reply that fails it is stored as failed
with its reason — there is no one-shot repair re-ask, as a batch cannot converse — and the
next run submits it again.

Submitted batches are recorded in a :class:`BatchStore` before polling starts, so stopping
featdisco at any point and rerunning resumes polling the same batches instead of paying
for them twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMBackend, LLMError, LLMRequest, LLMResponse, Usage
from featdisco.llm.batch.api import BATCH_PRICE_FACTOR, BatchAPI, BatchState
from featdisco.llm.batch.fill import FillingEngine
from featdisco.llm.batch.store import BatchRecord, BatchStore, PendingItem
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallResult
from featdisco.llm.validate import ReplyProblem, check_reply

log = logging.getLogger("featdisco.llm")


def make_batch_api(backend: LLMBackend, **limits: Any) -> BatchAPI:
    """The batch API that matches ``backend`` (openai or anthropic)."""
    from featdisco.llm.openai import OpenAILLM

    if isinstance(backend, OpenAILLM):
        from featdisco.llm.batch.openai_api import OpenAIBatchAPI

        return OpenAIBatchAPI(backend, **limits)
    if backend.name == "anthropic":
        from featdisco.llm.anthropic import AnthropicLLM
        from featdisco.llm.batch.anthropic_api import AnthropicBatchAPI

        if isinstance(backend, AnthropicLLM):
            return AnthropicBatchAPI(backend, **limits)
    raise FeatdiscoError(f"--batch needs the openai or anthropic backend, not {backend.name!r}")


class BatchEngine(FillingEngine):
    """A :class:`CallEngine` that answers through provider batches.

    ``poll_interval`` is the wait between polls; with ``wait=False`` a run submits, collects
    whatever has finished, and returns the rest as ``pending`` (rerun to collect them).
    ``max_requests`` / ``max_bytes`` lower the provider's per-batch limits.
    """

    def __init__(self, backend: LLMBackend, cache: CallCache, *, poll_interval: float = 30.0,
                 wait: bool = True, max_requests: int | None = None,
                 max_bytes: int | None = None, api: BatchAPI | None = None,
                 **engine_options: Any) -> None:
        super().__init__(backend, cache, **engine_options)
        self.poll_interval = poll_interval
        self.wait = wait
        self._limits = {k: v for k, v in (("max_requests", max_requests),
                                          ("max_bytes", max_bytes)) if v is not None}
        self._api = api
        self.submitted: list[str] = []  # batch ids this engine created

    async def _fill(self, todo: Mapping[str, LLMRequest]) -> dict[str, CallResult]:
        assert self.cache is not None
        api = self._api or make_batch_api(self.backend, **self._limits)
        store = BatchStore(self.cache.path)
        fresh: dict[str, CallResult] = {}
        try:
            name, model = self.backend.name, self.backend.model
            inflight = store.pending_keys(name, model)
            new = [(k, r) for k, r in todo.items() if k not in inflight]
            if inflight:
                log.info("resuming %d submitted batch(es)", len(store.pending(name, model)))
            send, skipped = self._within_budget(new)
            for k in skipped:
                fresh[k] = CallResult(k, "skipped_budget", reason="budget",
                                      message=f"not sent: ${self.cap_limit()} was reached")
            for chunk, lines in _chunks(send, api):
                batch_id = await api.submit(lines)
                store.add(batch_id, api.provider, name, model,
                          ((k, r.prompt_version, r.schema_name, r.schema) for k, r in chunk))
                self.submitted.append(batch_id)
                log.info("submitted %s batch %s (%d requests)", api.provider, batch_id, len(chunk))
            while True:
                pending = store.pending(name, model)
                for b in pending:
                    state = await api.poll(b.id)
                    if state.done:
                        await self._collect(b, state, api, store, todo, fresh)
                if not self.wait or not store.pending(name, model):
                    break
                await asyncio.sleep(self.poll_interval)
        finally:
            await api.aclose()
            store.close()
        return fresh

    def _within_budget(self, items: list[tuple[str, LLMRequest]]
                       ) -> tuple[list[tuple[str, LLMRequest]], list[str]]:
        """Under ``max_cost`` and the run's budget, the requests whose estimated batch cost
        still fits (a batch is paid in full once submitted, so the cap applies before
        submitting)."""
        if self.max_cost is None and self.budget is None:
            return items, []
        total = 0.0
        for i, (_, r) in enumerate(items):
            total += self._attempt_cost(r) * BATCH_PRICE_FACTOR
            if (limit := self._over_cap(total)) is not None:
                self._stopped_by = self._stopped_by or limit
                return items[:i], [k for k, _ in items[i:]]
        return items, []

    async def _collect(self, batch: BatchRecord, state: BatchState, api: BatchAPI,
                       store: BatchStore, todo: Mapping[str, LLMRequest],
                       fresh: dict[str, CallResult]) -> None:
        """Validate and cache every result of a finished batch; requests it returned no
        result for are recorded as failed with the batch's reason."""
        assert self.cache is not None
        items = store.items(batch.id)
        seen: set[str] = set()
        async for cid, out in api.results(batch.id):
            item = items.get(cid)
            if item is None or cid in seen:
                continue
            seen.add(cid)
            res = self._store(item, out)
            if cid in todo:
                fresh[cid] = res
                self.progress.advance(failed=not res.ok, tokens=res.usage.input_tokens
                                      + res.usage.output_tokens, cost=res.cost)
        for key, item in items.items():
            if key not in seen:
                msg = state.detail or f"the batch ended ({state.state}) without a result for it"
                res = self._store(item, LLMError(state.leftover_reason, msg, retryable=True))
                if key in todo:
                    fresh[key] = res
        store.mark(batch.id, "collected", state.state)
        self.cache.flush()
        log.info("collected %s batch %s (%s): %d results", api.provider, batch.id, state.state,
                 len(seen))

    def _store(self, item: PendingItem, out: LLMResponse | LLMError) -> CallResult:
        assert self.cache is not None
        name, model = self.backend.name, self.backend.model
        if isinstance(out, LLMError):
            self.cache.put_failed(item.key, name, model, item.prompt_version, out.reason,
                                  out.message, 1, Usage(), cost=0.0)
            return CallResult(item.key, "failed", reason=out.reason, message=out.message,
                              attempts=1)
        usage = out.usage
        price = self.prices.cost(name, model, usage)
        cost = None if price is None else price * BATCH_PRICE_FACTOR
        if cost is not None:
            self._spent += cost
        try:
            data = check_reply(out, item.schema)
        except ReplyProblem as p:
            self.cache.put_failed(item.key, name, model, item.prompt_version, p.reason,
                                  p.message, 1, usage, out.text, cost=cost, replied_model=out.model)
            return CallResult(item.key, "failed", text=out.text, reason=p.reason,
                              message=p.message, usage=usage, cost=cost, attempts=1)
        self.cache.put_ok(item.key, name, model, item.prompt_version, out.text, data, usage, 1,
                          cost=cost, replied_model=out.model)
        return CallResult(item.key, "ok", data=data, text=out.text, usage=usage, cost=cost,
                          attempts=1)


def _chunks(items: list[tuple[str, LLMRequest]], api: BatchAPI
            ) -> Iterator[tuple[list[tuple[str, LLMRequest]], list[bytes]]]:
    """Consecutive chunks within ``api.max_requests`` items and ``api.max_bytes`` bytes."""
    chunk: list[tuple[str, LLMRequest]] = []
    lines: list[bytes] = []
    size = 0
    for k, r in items:
        line = api.line(k, r)
        if len(line) + 1 > api.max_bytes:
            raise FeatdiscoError(f"one request is {len(line):,} bytes, over the provider's "
                                 f"{api.max_bytes:,}-byte batch limit")
        if chunk and (len(chunk) >= api.max_requests or size + len(line) + 1 > api.max_bytes):
            yield chunk, lines
            chunk, lines, size = [], [], 0
        chunk.append((k, r))
        lines.append(line)
        size += len(line) + 1
    if chunk:
        yield chunk, lines
