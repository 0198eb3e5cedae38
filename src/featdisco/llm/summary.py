"""What the engine reports: a run's counts (:class:`RunSummary`, accumulated over every run
of an engine and recorded per stage in the manifest) and a dry run's estimate
(:class:`Estimate`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

from featdisco.llm.progress import retried_text


class LLMUse(TypedDict):
    """A :class:`RunSummary` as JSON: what the manifest, a scan's or an ask's output and the
    commands' exit status read (``cost_usd`` None: some call had no known price)."""

    calls: int
    unique: int
    cached: int
    ok: int
    failed: int
    skipped_budget: int
    failed_by_reason: dict[str, int]
    retried_by_reason: dict[str, int]
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    elapsed_s: float


@dataclass(slots=True)
class Failures:
    """LLM calls that failed and why (the provider's error code, or what was wrong with the
    reply): one tally for the engine's summary and the report of each stage that calls."""

    failed: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failed_by_reason[reason] += 1


@dataclass(slots=True)
class RunSummary(Failures):
    """What one or more runs did; ``cost`` is None when some call had no known price."""

    calls: int = 0
    unique: int = 0
    cached: int = 0
    ok: int = 0
    skipped_budget: int = 0
    retried_by_reason: Counter[str] = field(default_factory=Counter)  # retries, not calls
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = 0.0
    elapsed: float = 0.0

    def add(self, other: RunSummary) -> None:
        for f in ("calls", "unique", "cached", "ok", "failed", "skipped_budget", "attempts",
                  "input_tokens", "output_tokens", "elapsed"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.failed_by_reason.update(other.failed_by_reason)
        self.retried_by_reason.update(other.retried_by_reason)
        self.cost = None if self.cost is None or other.cost is None else self.cost + other.cost

    def use(self) -> LLMUse:
        return LLMUse(calls=self.calls, unique=self.unique, cached=self.cached, ok=self.ok,
                      failed=self.failed, skipped_budget=self.skipped_budget,
                      failed_by_reason=dict(self.failed_by_reason),
                      retried_by_reason=dict(self.retried_by_reason), attempts=self.attempts,
                      input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                      cost_usd=self.cost, elapsed_s=round(self.elapsed, 3))

    def as_dict(self) -> dict[str, Any]:
        """:meth:`use` as a plain dict, for the manifest writers that take one."""
        return dict(self.use())

    def __str__(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.failed_by_reason.most_common())
        cost = "unknown" if self.cost is None else f"${self.cost:.4f}"
        retried = retried_text(self.retried_by_reason)
        return (f"{self.calls} calls ({self.unique} unique, {self.cached} cached): "
                f"{self.ok} ok, {self.failed} failed{f' ({reasons})' if reasons else ''}, "
                f"{retried + ', ' if retried else ''}"
                f"{self.skipped_budget} skipped at a cost limit (--max-cost or --budget); {self.input_tokens:,} in / "
                f"{self.output_tokens:,} out tokens, cost {cost}, {self.elapsed:.1f}s")


@dataclass(slots=True)
class Estimate:
    """A dry run: what a run would send and roughly cost. ``output_tokens`` assumes the
    mean reply length already seen for this prompt in the cache, else ``max_tokens``
    (an upper bound); ``cost`` is None when the model has no known price."""

    calls: int
    unique: int
    cached: int
    to_send: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    output_basis: str

    def __str__(self) -> str:
        cost = "unknown (no price for this model)" if self.cost is None else f"${self.cost:.4f}"
        return (f"{self.calls} calls, {self.unique} unique, {self.cached} already cached: "
                f"{self.to_send} to send, about {self.input_tokens:,} input and "
                f"{self.output_tokens:,} output tokens ({self.output_basis}), cost {cost}")
