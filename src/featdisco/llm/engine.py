"""The call engine under every stage: concurrency, limits, retries, validation, cache, cost.

Stages hand it a list of requests and get back one :class:`CallResult` per request, in
order, each either ``ok`` (with data that passed the schema), ``failed`` (with a reason)
or ``skipped_budget``. Nothing is dropped: an exception from a backend becomes a failed
result, not a lost call. Only errors that every later call would hit too (a bad key, an
unknown model) stop the run, with a FeatdiscoError naming the cause and everything finished
kept in the cache.

Why it is built this way:

* A fixed pool of ``concurrency`` workers pulls from a queue, rather than one task per
  request, so a million-request stage holds a million small records, not a million
  coroutines, and the client's CPU per call stays flat as concurrency grows.
* Finished calls go to the cache one by one (see cache.py), so a killed run resumes
  without resending anything that completed; identical requests share one key and are sent
  once per run and once ever.
* Transport faults (429, 5xx, resets, timeouts) are retried with exponential backoff and
  full jitter, never sooner than the server's Retry-After. A reply that arrives but cannot
  be used (refusal, empty, bad JSON, schema violation) gets one repair: the model sees its
  reply and what was wrong with it. Re-asking blindly rarely changes a temperature-0 answer.
* Synchronous callers (the stages) run on one event loop the engine keeps until
  :meth:`CallEngine.close`, so the backend's connections, and the rate limits, carry over
  from one stage to the next instead of being rebuilt per stage.
* Retries are counted by reason while they happen (progress) and in the summary, so a
  stage slowed by timeouts or 429s says so.
* Under ``max_cost`` a call starts only if the money already spent, plus the estimated cost
  of the calls in flight and of this one, stays within the cap; so the run stops at the cap,
  not one concurrency's worth of calls after it. A call that would pass it only because of
  the calls in flight waits for them (their estimates are usually far above what they
  cost) and is held back only if it would pass the cap with none in flight; each held-back
  call is counted (``skipped_budget``). ``budget`` is the same check over every
  invocation of the run (what the ledger says was spent before this engine, plus its own);
  reaching it raises :class:`BudgetReached` once the run's remaining calls are set aside.
* With an :class:`Account`, every finished call is written to the cache file's usage ledger
  in the same transaction as the call (cache.py), so an interrupted invocation is counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMBackend, LLMError, LLMRequest, LLMResponse, Usage
from featdisco.llm.cache import CachedCall, CallCache, request_key
from featdisco.llm.limits import TokenBucket, backoff_delay
from featdisco.llm.prices import PriceTable, estimate_input_tokens, estimate_tokens
from featdisco.llm.progress import Progress, make_progress
from featdisco.llm.summary import Estimate, RunSummary
from featdisco.llm.validate import ReplyProblem, check_reply, repair_request

log = logging.getLogger("featdisco.llm")

Status = Literal["ok", "failed", "skipped_budget"]

# Errors that every later call would hit too (a bad key, no such model, no credit): the run
# stops with one clear message instead of recording the same failure for every request.
FATAL_REASONS = frozenset({"auth", "forbidden", "not-found", "payment-required"})
# Failed connects of one call, before any call has reached the server, that stop the run.
UNREACHABLE_TRIES = 3
# 429s one call may meet before it fails. A rate limit says "later", not "broken": its
# retries have their own budget, and their backoff stops growing after the second (at most
# 2 x backoff_base, never before Retry-After), so that calls turned away at the limit come
# back while the server has room instead of idling through ever longer waits (measured in
# bench/llm_engine.py: exponential waits left the limit 40% used and lost calls).
RATE_LIMIT_RETRIES = 50


@dataclass(slots=True)
class CallResult:
    """The outcome of one request. ``data`` is the parsed, schema-valid JSON (or the text
    when no schema was given); ``cost`` is what this run paid for it (0 when cached, None
    when the model has no known price)."""

    key: str
    status: Status
    data: Any = None
    text: str | None = None
    reason: str | None = None
    message: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0
    cached: bool = False
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_cache(cls, c: CachedCall) -> CallResult:
        """A cached success as this run's result: nothing paid for it now."""
        return cls(c.key, "ok", data=c.data, text=c.text, usage=c.usage, cost=0.0,
                   cached=True, attempts=c.attempts)


DRY_RUN_BATCH = 32_768  # distinct requests looked up in the cache at once by a dry run


class BudgetReached(FeatdiscoError):
    """The run's budget (``--budget``, over every invocation) is spent: the command stops
    with exit status 3, like a run stopped at ``--max-cost``, and a rerun with a higher
    budget continues from the cache."""

    exit_code = 3


@dataclass(slots=True)
class Account:
    """Whose calls an engine makes, for the usage ledger. ``open`` is called before the
    first call is sent (not by a dry run): it returns the run's id and what the run spent
    before the ledger existed (a run made by an older featdisco), and may write them into
    the run's manifest. ``scope`` is the stage or analysis making the calls now."""

    open: Callable[[], tuple[str, float]]
    scope: str = ""
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # this invocation
    run: str | None = None
    spent_before: float = 0.0  # by the run before this engine's first call
    command: str | None = None  # the command making the calls (None: read from sys.argv)


class EngineOptions(TypedDict, total=False):
    """:class:`CallEngine`'s keyword arguments, as a run's settings give them to an executor
    (which makes the engine, perhaps one per worker)."""

    concurrency: int
    rpm: float | None
    tpm: float | None
    max_retries: int
    timeout: float
    max_cost: float | None
    prices: PriceTable | None
    progress: str | Progress | None
    backoff_base: float
    backoff_max: float
    repair: bool
    seed: int | None
    budget: float | None
    account: Account | None


class CallEngine:
    """Runs requests against one backend. Parameters are fixed at construction; ``summary``
    accumulates over every run of this engine, ``last_summary`` is the latest run's."""

    def __init__(self, backend: LLMBackend, cache: CallCache | None = None, *,
                 concurrency: int = 64, rpm: float | None = None, tpm: float | None = None,
                 max_retries: int = 6, timeout: float = 60.0, max_cost: float | None = None,
                 prices: PriceTable | None = None, progress: str | Progress | None = "auto",
                 backoff_base: float = 1.0, backoff_max: float = 60.0, repair: bool = True,
                 seed: int | None = None, budget: float | None = None,
                 account: Account | None = None) -> None:
        if concurrency < 1:
            raise FeatdiscoError("concurrency must be at least 1")
        self.backend = backend
        self.cache = cache
        # A backend that serves one call at a time (the in-process model) says so; more
        # workers would only queue behind it and eat their timeouts waiting.
        backend_max = getattr(backend, "max_concurrency", None)
        self.concurrency = min(concurrency, backend_max) if backend_max else concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.max_cost = max_cost
        self.prices = prices or PriceTable()
        self.progress = make_progress(progress)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.repair = repair
        self._rpm = TokenBucket(rpm) if rpm else None
        self._tpm = TokenBucket(tpm) if tpm else None
        self._rng = random.Random(seed)
        if max_cost is not None and not self.prices.known(backend.name, backend.model):
            raise FeatdiscoError(
                f"cannot enforce a cost cap: no price is known for model {backend.model!r}; "
                "add it with --prices FILE (or FEATDISCO_PRICES) or drop --max-cost")
        if budget is not None and not self.prices.known(backend.name, backend.model):
            raise FeatdiscoError(
                f"cannot keep to the run's budget (${budget:g}): no price is known for model "
                f"{backend.model!r}; add it with --prices FILE (or FEATDISCO_PRICES)")
        self.budget = budget
        self.account = account
        self._stopped_by: str | None = None  # "max_cost" or "budget"
        self._spent = 0.0
        self._reserved = 0.0  # the estimated cost of the calls in flight
        self._in_flight = 0
        self._settled = asyncio.Event()  # set (and replaced) each time a call in flight ends
        self._fatal: LLMError | None = None
        self._reached = False  # some call has had an answer from the server
        self._mean_out: float | None = None
        self._n_out = 0
        self._retried: Counter[str] = Counter()
        self._runner: asyncio.Runner | None = None
        self._finalizer: weakref.finalize | None = None
        self.summary = RunSummary()
        self.last_summary = RunSummary()

    @property
    def spent(self) -> float:
        """USD spent by this engine so far (priced calls only)."""
        return self._spent

    @property
    def budget_spent(self) -> float:
        """USD the run has spent over every invocation, this engine's calls included."""
        before = self.account.spent_before if self.account is not None else 0.0
        return before + self._spent

    def _open_account(self) -> None:
        """Before the first call of a run: open the ledger's invocation (once per cache),
        learn what the run spent before (for the budget), and tag this run's calls with
        the account's scope."""
        acc, cache = self.account, self.cache
        if acc is None or cache is None:
            return
        if cache.invocation is None or acc.run is None:
            acc.run, legacy = acc.open()
            cache.begin_invocation(acc.run, acc.uid, acc.command)
            acc.spent_before = legacy + cache.spent(acc.run) - self._spent
        cache.scope = acc.scope

    def _over_cap(self, est: float) -> str | None:
        """The limit (``max_cost`` or ``budget``) a call estimated at ``est`` USD would pass,
        with what was spent and the estimates of the calls in flight; None if neither."""
        ahead = self._spent + self._reserved + est
        if self.max_cost is not None and ahead > self.max_cost:
            return "max_cost"
        if self.budget is not None and self.budget_spent - self._spent + ahead > self.budget:
            return "budget"
        return None

    async def _room_for(self, est: float) -> str | None:
        """None once a call estimated at ``est`` USD fits under the limits; the limit it
        would pass when it does not fit even with no other call in flight. While it fits
        only if calls in flight cost less than their estimates, it waits for them to finish:
        holding it back at once would count their estimates as spent, and stop a run far
        below its cap (their replies are usually much shorter than ``max_tokens``)."""
        while (limit := self._over_cap(est)) is not None and self._in_flight:
            await self._settled.wait()
        return limit

    def cap_limit(self) -> float | None:
        """The limit that stopped the calls (``max_cost`` or the budget)."""
        return self.budget if self._stopped_by == "budget" else self.max_cost

    def stop_text(self) -> str:
        """Why calls were held back, in words: the cap or the budget, with the figures."""
        if self._stopped_by == "budget" and self.budget is not None:
            spent = self.budget_spent
            share = f" ({spent / self.budget:.0%})" if self.budget > 0 else ""
            return (f"stopped at the run's budget: ${spent:.4f} of ${self.budget:g} spent{share} "
                    "over every invocation; finished calls are kept, and rerunning with a higher "
                    "--budget continues (scan, ask, score-labels and hierarchy, which have no --budget, "
                    "use the one `featdisco run --run-dir RUN --budget USD` sets)")
        return (f"stopped at the --max-cost cap (${self._spent:.4f} of ${self.max_cost} spent "
                "in this invocation); rerun with a higher cap to continue")

    def key(self, request: LLMRequest) -> str:
        return request_key(self.backend.name, self.backend.model, request)

    # ------------------------------------------------------------------ estimates
    def _expected_output(self, request: LLMRequest) -> float:
        if self._mean_out is not None and self._n_out >= 10:
            return min(self._mean_out, request.sampling.max_tokens)
        return float(request.sampling.max_tokens)

    def _attempt_cost(self, request: LLMRequest) -> float:
        p = self.prices.cost(self.backend.name, self.backend.model,
                             Usage(estimate_input_tokens(request),
                                   int(self._expected_output(request))))
        return p or 0.0

    def dry_run(self, requests: Iterable[LLMRequest]) -> Estimate:
        """Calls, tokens and cost a run would incur, without calling anything.

        ``requests`` may be a generator: they are keyed and looked up in the cache
        :data:`DRY_RUN_BATCH` at a time, so estimating millions of calls holds their keys,
        not the rendered requests. The mean reply length is read from the cache once per
        prompt version (it is an aggregate over every cached call).
        """
        seen: set[str] = set()
        batch: dict[str, LLMRequest] = {}
        mean_out: dict[str, float | None] = {}
        calls = cached = tin = tout = 0
        basis = "max_tokens, an upper bound"

        def settle() -> None:
            nonlocal cached, tin, tout, basis
            hits = self.cache.get_many(batch) if self.cache else {}
            for k, r in batch.items():
                if k in hits and hits[k].status == "ok":
                    cached += 1
                    continue
                tin += estimate_input_tokens(r)
                if r.prompt_version not in mean_out:
                    mean_out[r.prompt_version] = self.cache.mean_output_tokens(
                        self.backend.name, self.backend.model, r.prompt_version) \
                        if self.cache else None
                reply = mean_out[r.prompt_version]
                if reply is not None:
                    basis = "mean reply length seen in the cache"
                tout += int(reply if reply is not None else r.sampling.max_tokens)
            batch.clear()

        for r in requests:
            calls += 1
            k = self.key(r)
            if k not in seen:
                seen.add(k)
                batch[k] = r
                if len(batch) >= DRY_RUN_BATCH:
                    settle()
        settle()
        cost = self.prices.cost(self.backend.name, self.backend.model, Usage(tin, tout))
        return Estimate(calls, len(seen), cached, len(seen) - cached, tin, tout, cost, basis)

    # ------------------------------------------------------------------ running
    def run_sync(self, requests: Sequence[LLMRequest], desc: str = "calls") -> list[CallResult]:
        """:meth:`run` for synchronous callers, on the engine's own event loop (kept open
        until :meth:`close`, so connections and limits outlive one stage); inside a running
        loop (a notebook) that loop is driven from a helper thread."""
        return self._on_loop(self.run(requests, desc))

    def _on_loop(self, coro: Any) -> Any:
        if self._runner is None:
            self._runner = asyncio.Runner(loop_factory=_fast_loop_factory())
            self._finalizer = weakref.finalize(self, _close_runner, self._runner, self.backend)
        runner = self._runner
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return runner.run(coro)
        with ThreadPoolExecutor(1) as ex:
            return ex.submit(runner.run, coro).result()

    def close(self) -> None:
        """Release the backend's connections and end the engine's event loop (a later
        :meth:`run_sync` opens a new one)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _close_runner once
        self._runner = self._finalizer = None

    def _plan(self, requests: Sequence[LLMRequest]
              ) -> tuple[list[str], dict[str, LLMRequest], dict[str, CallResult]]:
        """Each request's key, the first request of each distinct key (identical requests
        are sent once), and the results the cache already holds as successes."""
        keys = [self.key(r) for r in requests]
        first: dict[str, LLMRequest] = {}
        for k, r in zip(keys, requests, strict=True):
            first.setdefault(k, r)
        done: dict[str, CallResult] = {}
        if self.cache is not None:
            for k, c in self.cache.get_many(first).items():
                if c.status == "ok":
                    done[k] = CallResult.from_cache(c)
        return keys, first, done

    async def run(self, requests: Sequence[LLMRequest], desc: str = "calls") -> list[CallResult]:
        """One result per request, in the order given."""
        t0 = time.monotonic()
        keys, first, done = self._plan(requests)
        queue = deque((k, r) for k, r in first.items() if k not in done)
        n_cached = len(done)
        if first:
            self._open_account()
        self._retried = Counter()
        self.progress.start(len(first), n_cached, desc)
        try:
            workers = [asyncio.create_task(self._worker(queue, done))
                       for _ in range(min(self.concurrency, len(queue)))]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for w in workers:
                    w.cancel()
                raise
        finally:
            if self.cache is not None:
                self.cache.flush()
            self.progress.finish()
        if self._fatal is not None:
            err, self._fatal = self._fatal, None
            answered = sum(r.status == "ok" and not r.cached for r in done.values())
            finished = (f"{answered} calls were answered and are cached; fix the problem and "
                        "rerun to continue")
            if err.unreachable:
                url = getattr(self.backend, "base_url", None) or "its default URL"
                raise FeatdiscoError(
                    f"stopped: cannot reach the {self.backend.name} server at {url} "
                    f"({err.message}); check --base-url and that the server is running. "
                    f"{finished}")
            raise FeatdiscoError(
                f"stopped: the {self.backend.name} server rejected the run ({err.reason}): "
                f"{err.message}. {finished}")
        results = [done[k] for k in keys]
        self._summarise(len(requests), first, done, n_cached, t0)
        return results

    def _summarise(self, n_requests: int, first: dict[str, LLMRequest],
                   done: dict[str, CallResult], n_cached: int, t0: float) -> None:
        """Account one run in ``last_summary`` and ``summary`` (shared with the engines
        that fill the cache another way: provider batches, Ray)."""
        s = RunSummary(calls=n_requests, unique=len(first), cached=n_cached,
                       retried_by_reason=self._retried)
        for k in first:
            res = done[k]
            if res.status == "ok":
                s.ok += 1
            elif res.status == "failed":
                s.failed += 1
                s.failed_by_reason[res.reason or "unknown"] += 1
            else:
                s.skipped_budget += 1
            if not res.cached:
                s.attempts += res.attempts
                s.input_tokens += res.usage.input_tokens
                s.output_tokens += res.usage.output_tokens
                s.cost = None if s.cost is None or res.cost is None else s.cost + res.cost
        s.elapsed = time.monotonic() - t0
        self.last_summary = s
        self.summary.add(s)
        if self.cache is not None and self.cache.invocation is not None:
            self.cache.account("cached", s.cached)  # not sent, so not written call by call
            self.cache.account("skipped", s.skipped_budget)
            self.cache.flush()
        if s.skipped_budget and self._stopped_by == "budget":
            raise BudgetReached(self.stop_text())

    async def _worker(self, queue: deque[tuple[str, LLMRequest]],
                      done: dict[str, CallResult]) -> None:
        while queue and self._fatal is None:
            key, request = queue.popleft()
            result = await self._call(key, request)
            done[key] = result
            self.progress.advance(failed=result.status != "ok",
                                  tokens=result.usage.input_tokens + result.usage.output_tokens,
                                  cost=result.cost)

    async def _call(self, key: str, request: LLMRequest) -> CallResult:
        attempts = transport_failures = rate_limited = 0
        repaired = False
        usage = Usage()
        cost: float | None = 0.0
        current = request
        while True:
            capped = self.max_cost is not None or self.budget is not None
            est = self._attempt_cost(current) if capped else 0.0
            if capped and (limit := await self._room_for(est)) is not None:
                self._stopped_by = self._stopped_by or limit
                what = ("the run's budget" if limit == "budget"
                        else "the cost cap") + f" ${self.budget if limit == 'budget' else self.max_cost} was reached"
                return CallResult(key, "skipped_budget", reason="budget", usage=usage,
                                  cost=cost, attempts=attempts, message=f"not sent: {what}")
            self._reserved += est  # at once: a call let through while this one waits below counts it
            self._in_flight += 1
            err: LLMError | None = None
            try:
                if self._rpm is not None:
                    await self._rpm.acquire(1)
                if self._tpm is not None:
                    await self._tpm.acquire(estimate_input_tokens(current)
                                            + self._expected_output(current))
                attempts += 1
                async with asyncio.timeout(self.timeout):
                    resp = await self.backend.complete(current)
            except TimeoutError:
                err = LLMError("timeout", f"no reply within {self.timeout:g}s", retryable=True)
            except LLMError as e:
                err = e
            except FeatdiscoError:  # a configuration problem (e.g. no local model): say so
                raise
            except Exception as e:  # a backend bug must not lose the call or kill the run
                log.warning("backend %s raised %s", self.backend.name, type(e).__name__,
                            exc_info=True)
                err = LLMError("backend-error", f"{type(e).__name__}: {e}"[:500], retryable=False)
            finally:
                self._reserved -= est
                self._in_flight -= 1
                self._settled.set()  # wake the calls waiting for room under the cap
                self._settled = asyncio.Event()
            if err is not None:
                if err.reason == "rate-limit":  # "come back later", not "broken": see below
                    rate_limited += 1
                    failures, allowed = min(rate_limited, 2), RATE_LIMIT_RETRIES
                else:
                    transport_failures += 1
                    failures, allowed = transport_failures, self.max_retries
                if err.reason not in ("connection", "timeout"):
                    self._reached = True  # the server answered, if only with an error
                if (err.unreachable and not self._reached
                        and transport_failures >= UNREACHABLE_TRIES):
                    self._fatal = err  # nothing has got through: a wrong URL or a server down
                    return self._failed(key, request, err.reason, err.message, attempts,
                                        usage, cost)
                if err.retryable and failures <= allowed and rate_limited <= RATE_LIMIT_RETRIES:
                    self._retried[err.reason] += 1
                    retried = getattr(self.progress, "retried", None)
                    if retried is not None:
                        retried(err.reason)
                    await asyncio.sleep(backoff_delay(failures, self.backoff_base,
                                                      self.backoff_max, err.retry_after, self._rng))
                    continue
                if err.reason in FATAL_REASONS:
                    self._fatal = err
                return self._failed(key, request, err.reason, err.message, attempts, usage, cost)
            self._reached = True
            replied = resp.model
            u = self._usage(current, resp)
            usage = usage + u
            c = self.prices.cost(self.backend.name, self.backend.model, u)
            if c is not None:
                self._spent += c
            cost = None if cost is None or c is None else cost + c
            try:
                data = check_reply(resp, request.schema)
            except ReplyProblem as p:
                if self.repair and not repaired:
                    repaired = True
                    current = repair_request(request, resp, p)
                    continue
                return self._failed(key, request, p.reason, p.message, attempts, usage, cost,
                                    resp.text, replied)
            if self.cache is not None:
                self.cache.put_ok(key, self.backend.name, self.backend.model,
                                  request.prompt_version, resp.text, data, usage, attempts,
                                  cost=cost, replied_model=replied)
            return CallResult(key, "ok", data=data, text=resp.text, usage=usage, cost=cost,
                              attempts=attempts)

    def _usage(self, request: LLMRequest, resp: LLMResponse) -> Usage:
        u = resp.usage
        if u.input_tokens == 0 and u.output_tokens == 0:  # server reported none: estimate
            u = Usage(estimate_input_tokens(request), estimate_tokens(resp.text or ""))
        self._n_out += 1
        m = self._mean_out or 0.0
        self._mean_out = m + (u.output_tokens - m) / self._n_out
        return u

    def _failed(self, key: str, request: LLMRequest, reason: str, message: str, attempts: int,
                usage: Usage, cost: float | None, text: str | None = None,
                replied: str | None = None) -> CallResult:
        if self.cache is not None:
            self.cache.put_failed(key, self.backend.name, self.backend.model,
                                  request.prompt_version, reason, message, attempts, usage, text,
                                  cost=cost, replied_model=replied)
        return CallResult(key, "failed", text=text, reason=reason, message=message, usage=usage,
                          cost=cost, attempts=attempts)

    async def aclose(self) -> None:
        await self.backend.aclose()


def _close_runner(runner: asyncio.Runner, backend: LLMBackend) -> None:
    """Release what the backend opened on the runner's loop, then end the loop. HTTP
    backends mark themselves ``closes_per_loop`` (their aclose frees that loop's
    connections and they stay usable); others, like the in-process model, are left to
    whoever made them. Also run when an engine that was never closed is collected."""
    def close() -> None:
        try:
            if getattr(backend, "closes_per_loop", False):
                runner.run(backend.aclose())
        finally:
            runner.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        close()
        return
    with ThreadPoolExecutor(1) as ex:  # a loop runs on this thread: close from another
        ex.submit(close).result()


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the same calls with less event-loop overhead per call."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
