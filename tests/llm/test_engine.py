"""Engine behaviour: dedupe, repair, retries, budget, dry run, limits, sync use."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import Usage
from featdisco.llm.cache import CallCache
from featdisco.llm.limits import TokenBucket, backoff_delay
from featdisco.llm.prices import PriceTable, estimate_input_tokens
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features
from tests.llm.conftest import make_engine, requests_for


def test_identical_requests_are_sent_once(fake: FakeOpenAIServer, cache: CallCache) -> None:
    texts = ["same"] * 50 + ["other"] * 3
    results = make_engine(fake, cache).run_sync(requests_for(texts))
    assert fake.total == 2
    assert [r.data["echo"] for r in results] == texts


def test_repair_shows_the_model_its_mistake(fake: FakeOpenAIServer, cache: CallCache) -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: FakeRequest) -> Reply:
        seen.append(req.body)
        if req.attempt == 1:
            return Reply(content=json.dumps({"echo": req.key, "features": []}))
        return echo_features(req)

    fake.set_handler(handler)
    [r] = make_engine(fake, cache).run_sync(requests_for(["p"]))
    assert r.status == "ok" and r.attempts == 2
    repair = seen[1]["messages"]
    assert repair[-2]["role"] == "assistant" and '"features": []' in repair[-2]["content"]
    assert "features" in repair[-1]["content"] and "schema" in repair[-1]["content"]


def test_repair_is_bounded_to_one(fake: FakeOpenAIServer, cache: CallCache) -> None:
    fake.set_handler(lambda req: Reply(content="I'm sorry, but I can't help with that."))
    [r] = make_engine(fake, cache).run_sync(requests_for(["p"]))
    assert (r.status, r.reason, r.attempts, fake.total) == ("failed", "refusal", 2, 2)
    stored = cache.get(r.key)
    assert stored is not None and stored.status == "failed" and stored.reason == "refusal"


def test_provider_refusal_field(fake: FakeOpenAIServer) -> None:
    fake.set_handler(lambda req: Reply(content=None, refusal="I cannot do that"))
    [r] = make_engine(fake, None).run_sync(requests_for(["p"]))
    assert (r.status, r.reason) == ("failed", "refusal")


def test_non_retryable_fails_at_once(fake: FakeOpenAIServer) -> None:
    fake.set_handler(lambda req: Reply(status=400, raw_body=b'{"error": {"message": "bad"}}'))
    [r] = make_engine(fake, None).run_sync(requests_for(["p"]))
    assert (r.status, r.reason, r.attempts) == ("failed", "bad-request", 1)


def test_a_bad_key_stops_the_run_keeping_what_finished(fake: FakeOpenAIServer,
                                                      cache: CallCache) -> None:
    def handler(req: FakeRequest) -> Reply:
        if req.key.startswith("late"):
            return Reply(status=401, raw_body=b'{"error": {"message": "key revoked"}}')
        return echo_features(req)

    fake.set_handler(handler)
    texts = [f"early {i}" for i in range(5)] + [f"late {i}" for i in range(200)]
    engine = make_engine(fake, cache, concurrency=4)
    with pytest.raises(FeatdiscoError, match=r"rejected the run \(auth\).*key revoked"):
        engine.run_sync(requests_for(texts))
    assert fake.total < 20  # it stopped instead of failing 200 calls one by one
    assert cache.stats()["ok"] == 5


def test_retries_stop_after_max_retries(fake: FakeOpenAIServer) -> None:
    fake.set_handler(lambda req: Reply(status=503, raw_body=b'{"error": {"message": "down"}}'))
    [r] = make_engine(fake, None, max_retries=3).run_sync(requests_for(["p"]))
    assert (r.status, r.reason, r.attempts, fake.total) == ("failed", "server-error", 4, 4)


def test_free_text_requests(fake: FakeOpenAIServer) -> None:
    fake.set_handler(lambda req: Reply(content="A short label"))
    [r] = make_engine(fake, None).run_sync(requests_for(["p"], schema=None))
    assert (r.status, r.data) == ("ok", "A short label")


def test_max_cost_stops_cleanly_and_keeps_work(fake: FakeOpenAIServer, cache: CallCache) -> None:
    prices = PriceTable({"gpt-4o-mini": [1000.0, 1000.0]})  # $0.001 a token: easy to reach
    texts = [f"piece {i}" for i in range(40)]
    engine = make_engine(fake, cache, prices=prices, max_cost=1.0, concurrency=4)
    results = engine.run_sync(requests_for(texts))
    statuses = {r.status for r in results}
    assert statuses == {"ok", "skipped_budget"}
    assert engine.spent <= 1.0
    done = [r for r in results if r.status == "ok"]
    assert fake.total == len(done)
    assert engine.last_summary.skipped_budget == len(texts) - len(done)
    # raising the cap finishes the rest without resending what was done
    fake.reset()
    more = make_engine(fake, cache, prices=prices, max_cost=100.0)
    assert all(r.status == "ok" for r in more.run_sync(requests_for(texts)))
    assert fake.total == len(texts) - len(done)


def test_max_cost_holds_back_a_call_only_when_the_cap_would_really_be_passed(fake: FakeOpenAIServer) -> None:
    """Each call in flight counts at its estimate (max_tokens of output until replies are
    seen), far above what its short reply costs. A call that would pass the cap only with
    those estimates was held back, and every call after it: a $1 cap stopped after $0.11,
    with 57 of 60 calls held back. Now such a call waits for the calls in flight, and is held
    back only when the money left is less than it may cost."""
    prices = PriceTable({"gpt-4o-mini": [1000.0, 1000.0]})  # $0.001 a token
    requests = requests_for([f"piece {i}" for i in range(60)])
    engine = make_engine(fake, None, prices=prices, max_cost=1.0, concurrency=4)
    results = engine.run_sync(requests)
    held = [r for r in results if r.status == "skipped_budget"]
    sent = [r for r in results if r.status == "ok"]
    assert held and len(sent) + len(held) == len(requests) and fake.total == len(sent)
    assert engine.spent <= 1.0
    worst = max(prices.cost("openai", "gpt-4o-mini", Usage(estimate_input_tokens(r), r.sampling.max_tokens)) or 0.0
                for r in requests)
    assert 1.0 - engine.spent < worst  # it stopped when one more call could pass the cap, not long before
    assert engine.last_summary.skipped_budget == len(held)  # the count reported
    assert f"{len(held)} skipped at a cost limit" in str(engine.last_summary)
    assert held[0].message == "not sent: the cost cap $1.0 was reached"


def test_max_cost_needs_a_price(fake: FakeOpenAIServer) -> None:
    with pytest.raises(FeatdiscoError, match="no price"):
        make_engine(fake, None, prices=PriceTable(include_defaults=False), max_cost=1.0)


def test_dry_run_sends_nothing(fake: FakeOpenAIServer, cache: CallCache) -> None:
    engine = make_engine(fake, cache)
    texts = [f"piece {i}" for i in range(10)] + ["piece 0"]
    est = engine.dry_run(requests_for(texts))
    assert (est.calls, est.unique, est.to_send, fake.total) == (11, 10, 10, 0)
    assert est.output_tokens == 10 * 200 and est.input_tokens > 0
    assert est.cost is not None and est.cost > 0
    engine.run_sync(requests_for(texts[:4]))
    est2 = engine.dry_run(requests_for(texts))
    assert (est2.cached, est2.to_send) == (4, 6)
    assert est2.output_tokens < 6 * 200  # now from the replies actually seen


def test_rate_limit_buckets() -> None:
    b = TokenBucket(per_minute=60)  # one per second, burst of one
    assert b.reserve(1) == 0.0
    w1, w2 = b.reserve(1), b.reserve(1)
    assert 0.5 < w1 < 1.01 and w2 > w1  # later callers queue behind earlier ones
    assert backoff_delay(1, 0.5, 30, retry_after=4.0) >= 4.0
    assert all(0 <= backoff_delay(n, 0.5, 30, None) <= 30 for n in range(1, 12))


def test_rpm_limit_spaces_requests(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """--rpm 600 is ten calls a second with a burst of ten: of fifteen calls fired together
    the first ten go at once and the other five are held back a tenth of a second each,
    in order. The limiter's clock and sleeps are the test's, so no wall time is measured."""
    import types

    from featdisco.llm import limits

    held: list[float] = []

    async def sleep(delay: float) -> None:
        held.append(delay)
        await asyncio.sleep(0)

    monkeypatch.setattr(limits, "time", types.SimpleNamespace(monotonic=lambda: 0.0))  # a stopped clock
    monkeypatch.setattr(limits, "asyncio", types.SimpleNamespace(sleep=sleep))
    texts = [f"p{i}" for i in range(15)]
    results = make_engine(fake, None, rpm=600, concurrency=16).run_sync(requests_for(texts))
    assert all(r.ok for r in results) and fake.total == 15
    assert sorted(held) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    held.clear()
    assert all(r.ok for r in make_engine(fake, None, concurrency=16).run_sync(requests_for(texts)))
    assert held == []  # no --rpm: nobody waits


def test_run_sync_twice_and_inside_a_loop(fake: FakeOpenAIServer) -> None:
    engine = make_engine(fake, None)
    assert engine.run_sync(requests_for(["a"]))[0].ok
    assert engine.run_sync(requests_for(["b"]))[0].ok  # the same loop, the same pool

    async def notebook() -> bool:
        return engine.run_sync(requests_for(["c"]))[0].ok

    assert asyncio.run(notebook())
    assert engine.summary.calls == 3
