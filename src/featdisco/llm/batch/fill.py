"""An engine whose calls are made somewhere else, and whose results come back through the cache.

Provider batch APIs and Ray workers both answer requests outside the engine's own worker
pool. Rather than give each its own result plumbing, they write every finished call into
the run's :class:`CallCache` (successes and failures with their reasons, exactly as the
online engine does) and this class builds the per-request results from the cache. So a
stage cannot tell which engine ran it, and a rerun with any engine reuses what any other
engine finished.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest
from featdisco.llm.engine import CallEngine, CallResult


class FillingEngine(CallEngine):
    """A :class:`CallEngine` whose :meth:`_fill` answers the uncached requests by other
    means. Results come back in request order, like the online engine's."""

    async def _fill(self, todo: Mapping[str, LLMRequest]) -> dict[str, CallResult]:
        """Answer ``todo`` (key → request, none cached as ok), writing each outcome to the
        cache; return what was done this run (with its usage and cost). Keys it did not
        finish may be left out: they are reported as failed with reason ``pending``."""
        raise NotImplementedError

    async def run(self, requests: Sequence[LLMRequest], desc: str = "calls") -> list[CallResult]:
        if self.cache is None:
            raise FeatdiscoError(f"{type(self).__name__} needs a call cache: results come back "
                                 "through it")
        t0 = time.monotonic()
        keys, first, done = self._plan(requests)
        n_cached = len(done)
        todo = {k: r for k, r in first.items() if k not in done}
        if first:
            self._open_account()  # the usage ledger: results are accounted as they are stored
        self.progress.start(len(first), n_cached, desc)
        try:
            fresh = await self._fill(todo) if todo else {}
        finally:
            self.cache.flush()
            self.progress.finish()
        done.update(fresh)
        missing = [k for k in first if k not in done]
        stored = self.cache.get_many(missing)
        for k in missing:
            hit = stored.get(k)
            if hit is not None and hit.status == "ok":
                done[k] = CallResult.from_cache(hit)
            elif hit is not None:
                done[k] = CallResult(k, "failed", text=hit.text, reason=hit.reason,
                                     message=hit.message, usage=hit.usage, cost=0.0,
                                     cached=True, attempts=hit.attempts)
            else:
                done[k] = CallResult(k, "failed", reason="pending",
                                     message="not finished in this run; rerun to collect it")
        results = [done[k] for k in keys]
        self._summarise(len(requests), first, done, n_cached, t0)
        return results
