"""Progress for a person watching a long run: calls done, cached, failed, tokens, cost, ETA.

A live rich bar on a terminal; on anything else (a log file, CI, a notebook's captured
output) one plain log line every ``interval`` seconds, because a redrawn bar turns into
thousands of lines there. The engine only calls :meth:`start`, :meth:`advance`,
:meth:`finish` and, where a progress object has it, ``retried(reason)`` for each retry,
so that a stage slowed by timeouts or rate limits shows why while it happens; display
stays out of the engine.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger("featdisco.llm")


class Progress(Protocol):
    def start(self, total: int, cached: int, desc: str) -> None: ...

    def advance(self, *, failed: bool, tokens: int, cost: float | None) -> None: ...

    def finish(self) -> None: ...


def retried_text(by_reason: Mapping[str, int]) -> str:
    """'18 retried: timeout 12, rate-limit 6' ('' when nothing was retried)."""
    n = sum(by_reason.values())
    if not n:
        return ""
    parts = sorted(by_reason.items(), key=lambda kv: -kv[1])
    if len(parts) == 1:
        return f"{n} retried: {parts[0][0]}"
    return f"{n} retried: " + ", ".join(f"{k} {v}" for k, v in parts)


class _Counts:
    def __init__(self) -> None:
        self.total = self.cached = self.done = self.failed = self.tokens = 0
        self.cost: float | None = 0.0
        self.retried: Counter[str] = Counter()
        self.t0 = time.monotonic()
        self.desc = "calls"

    def start(self, total: int, cached: int, desc: str) -> None:
        self.total, self.cached, self.desc = total, cached, desc
        self.done = cached
        self.failed = self.tokens = 0
        self.cost = 0.0
        self.retried = Counter()
        self.t0 = time.monotonic()

    def add(self, failed: bool, tokens: int, cost: float | None) -> None:
        self.done += 1
        self.failed += failed
        self.tokens += tokens
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def retry_text(self) -> str:
        """', retried 18 (timeout 12, rate-limit 6)' ('' when nothing was retried)."""
        n = sum(self.retried.values())
        if not n:
            return ""
        return f", retried {n} (" + ", ".join(f"{k} {v}" for k, v in self.retried.most_common()) + ")"

    def eta(self) -> float | None:
        made = self.done - self.cached
        if made <= 0:
            return None
        return (time.monotonic() - self.t0) / made * (self.total - self.done)

    def line(self) -> str:
        eta = self.eta()
        cost = "unknown" if self.cost is None else f"${self.cost:.4f}"
        return (f"{self.desc}: {self.done}/{self.total} done ({self.cached} cached, "
                f"{self.failed} failed{self.retry_text()}), {self.tokens:,} tokens, cost {cost}, "
                f"ETA {'--' if eta is None else _fmt_secs(eta)}")


def _fmt_secs(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class NullProgress:
    def start(self, total: int, cached: int, desc: str) -> None:
        pass

    def advance(self, *, failed: bool, tokens: int, cost: float | None) -> None:
        pass

    def retried(self, reason: str) -> None:
        pass

    def finish(self) -> None:
        pass


class LogProgress:
    """One INFO line every ``interval`` seconds and one at the end."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.c = _Counts()
        self._last = 0.0

    def start(self, total: int, cached: int, desc: str) -> None:
        self.c.start(total, cached, desc)
        self._last = time.monotonic()

    def advance(self, *, failed: bool, tokens: int, cost: float | None) -> None:
        self.c.add(failed, tokens, cost)
        self._tick()

    def retried(self, reason: str) -> None:
        self.c.retried[reason] += 1
        self._tick()  # calls that only retry still show up

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("%s", self.c.line())

    def finish(self) -> None:
        log.info("%s", self.c.line())


class RichProgress:
    """A live bar; redraws are throttled by rich itself (a few per second), so advancing
    per call stays cheap at thousands of calls per second."""

    def __init__(self) -> None:
        self.c = _Counts()
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int, cached: int, desc: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.c.start(total, cached, desc)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=False,
            refresh_per_second=4)
        self._progress.start()
        self._task = self._progress.add_task(desc, total=total, completed=cached,
                                             stats=self._stats())

    def _stats(self) -> str:
        cost = "?" if self.c.cost is None else f"${self.c.cost:.4f}"
        return (f"cached {self.c.cached} failed {self.c.failed}{self.c.retry_text()} "
                f"tokens {self.c.tokens:,} cost {cost}")

    def advance(self, *, failed: bool, tokens: int, cost: float | None) -> None:
        self.c.add(failed, tokens, cost)
        self._progress.update(self._task, completed=self.c.done, stats=self._stats())

    def retried(self, reason: str) -> None:
        self.c.retried[reason] += 1
        if self._progress is not None:
            self._progress.update(self._task, stats=self._stats())

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def make_progress(mode: str | Progress | None = "auto") -> Progress:
    """``auto``: rich on a terminal, log lines otherwise; ``rich``, ``log``, ``none``;
    or any object with the :class:`Progress` methods."""
    if mode is None or mode == "none":
        return NullProgress()
    if not isinstance(mode, str):
        return mode
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "log"
    if mode == "rich":
        return RichProgress()
    if mode == "log":
        return LogProgress()
    raise ValueError(f"unknown progress mode {mode!r}; choose auto, rich, log or none")
