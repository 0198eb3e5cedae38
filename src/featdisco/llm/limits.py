"""Client-side rate limits and retry timing for the call engine.

Providers enforce requests- and tokens-per-minute quotas; staying under them on the client
turns a storm of 429s into an even flow. The bucket lets callers go into debt instead of
polling: each caller takes its tokens at once and sleeps until the debt is repaid, which
keeps the order fair and costs one clock read per call whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import random
import time


class TokenBucket:
    """``per_minute`` units per minute, with a burst of up to one second's worth (at
    least one unit), so a cold start does not fire a whole minute's quota at once."""

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._level = self.capacity
        self._stamp = time.monotonic()

    def reserve(self, n: float) -> float:
        """Take ``n`` units now; returns how long to wait before using them."""
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        self._level -= n
        return 0.0 if self._level >= 0 else -self._level / self.rate

    async def acquire(self, n: float = 1.0) -> None:
        wait = self.reserve(n)
        if wait > 0:
            await asyncio.sleep(wait)


def backoff_delay(failures: int, base: float, cap: float, retry_after: float | None,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter (uniform in [0, min(cap, base * 2**(n-1))]),
    which spreads retries of many failed calls instead of re-synchronising them; a
    server's Retry-After is a floor, as sending earlier only earns another 429."""
    r = (rng or random).uniform(0.0, min(cap, base * 2 ** (failures - 1)))
    if retry_after is not None:
        return max(min(retry_after, cap * 10), r)
    return r
