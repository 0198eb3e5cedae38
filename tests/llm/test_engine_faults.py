"""The engine under injected faults: every call ends ok or failed with a reason, none lost."""

from __future__ import annotations

import jsonschema
import pytest

from featdisco.llm.cache import CallCache
from tests.fakes.openai_server import (
    FAULTS,
    FakeOpenAIServer,
    FakeRequest,
    Reply,
    echo_features,
    fault_reply,
    faulty,
)
from tests.llm.conftest import SCHEMA, make_engine, requests_for

CONTENT_REASONS = {"invalid-json", "schema", "refusal", "empty"}
TRANSPORT_REASONS = {"rate-limit", "server-error", "connection", "timeout"}


# Every fault but the hang, whose only cure is a client timeout: a timeout short enough to
# catch it quickly is one a loaded machine also trips on healthy replies, which made the
# counts below flaky. The hang has its own test (test_each_fault_kind_is_handled).
ANSWERING_FAULTS = tuple(k for k in FAULTS if k != "hang")


def test_2000_calls_with_30_percent_faults(fake: FakeOpenAIServer, cache: CallCache) -> None:
    fake.set_handler(faulty(echo_features, rate=0.30, seed=7, kinds=ANSWERING_FAULTS))
    texts = [f"piece number {i}" for i in range(2000)]
    engine = make_engine(fake, cache, concurrency=64, max_retries=6)
    results = engine.run_sync(requests_for(texts))

    assert len(results) == len(texts)
    assert [r.key for r in results] == [engine.key(q) for q in requests_for(texts)]
    ok = [r for r in results if r.status == "ok"]
    failed = [r for r in results if r.status == "failed"]
    assert len(ok) + len(failed) == len(texts)  # nothing skipped, nothing lost
    for text, r in zip(texts, results, strict=True):
        if r.status == "ok":
            jsonschema.validate(r.data, SCHEMA)
            assert r.data["echo"] == text  # each reply went back to the request that asked
        else:
            assert r.reason in CONTENT_REASONS | TRANSPORT_REASONS, r.reason
            assert r.message
    # 30% faults per attempt: retries and the repair rescue nearly everything...
    assert len(ok) > 0.95 * len(texts)
    # ...but two content faults in a row do fail, and are reported, not hidden
    assert failed and {r.reason for r in failed} <= CONTENT_REASONS
    # every fault kind really happened
    assert sum(r.attempts for r in results) > 1.3 * len(texts)
    s = engine.last_summary
    assert (s.ok, s.failed, s.calls) == (len(ok), len(failed), len(texts))
    assert sum(s.failed_by_reason.values()) == len(failed)

    # the cache holds exactly these outcomes
    stored = cache.get_many(r.key for r in results)
    assert all(stored[r.key].status == r.status for r in results)

    # a rerun resends only the failures
    fake.reset()
    fake.set_handler(echo_features)
    again = engine.run_sync(requests_for(texts))
    assert all(r.status == "ok" for r in again)
    assert fake.total == len(failed)
    assert sum(r.cached for r in again) == len(ok)


def test_each_fault_kind_is_handled(fake: FakeOpenAIServer, cache: CallCache) -> None:
    # a fault on the first attempt only: every kind must end ok after retry or repair
    for kind in FAULTS:
        fake.reset()

        def handler(req: FakeRequest, kind: str = kind) -> Reply:
            return fault_reply(kind, req) if req.attempt == 1 else echo_features(req)

        fake.set_handler(handler)
        # Only the hang needs a short timeout. A loaded machine may also time out the healthy
        # retry: that is one more attempt, so the counts below hold however slow it is.
        engine = make_engine(fake, cache, **({"timeout": 1.0} if kind == "hang" else {}))
        [r] = engine.run_sync(requests_for([f"text for {kind}"]))
        assert r.status == "ok", (kind, r.reason, r.message)
        assert r.attempts >= 2 and fake.total == r.attempts
        if kind != "hang":  # nothing here can time out: exactly the fault, then the answer
            assert r.attempts == 2


def test_an_unreachable_server_stops_the_run_at_once_and_a_lost_one_mid_run_does_not(
        cache: CallCache) -> None:
    """Nothing listening at the URL, before any call got through: a wrong --base-url or a
    server that is down. The run stops after a few tries of the first calls, naming the
    URL, instead of backing off on every piece. Once calls have got through, a lost
    connection is a passing fault: retried, then recorded per call as before."""
    import socket

    from featdisco.errors import FeatdiscoError
    from featdisco.llm.engine import UNREACHABLE_TRIES

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing will listen on it
    dead = f"http://127.0.0.1:{port}/v1"

    class Dead:
        base_url = dead

    engine = make_engine(Dead(), cache, max_retries=6,  # type: ignore[arg-type]
                         concurrency=8)
    requests = requests_for([f"p{i}" for i in range(40)])
    with pytest.raises(FeatdiscoError, match=f"cannot reach the openai server at {dead}"):
        engine.run_sync(requests)
    # only the calls in flight were tried, each UNREACHABLE_TRIES times, not 7; the rest
    # were never started, and the tried ones are recorded as failed, for the rerun
    tried = cache.get_many([engine.key(r) for r in requests])
    assert 0 < len(tried) < len(requests)
    assert {(c.status, c.attempts) for c in tried.values()} == {("failed", UNREACHABLE_TRIES)}
    srv = FakeOpenAIServer(echo_features).start()
    try:
        live = make_engine(srv, cache, max_retries=2)
        assert all(r.status == "ok" for r in live.run_sync(requests_for(["first"])))
        srv.stop()  # the server goes away mid-run
        [r] = live.run_sync(requests_for(["second"]))
        assert (r.status, r.reason, r.attempts) == ("failed", "connection", 3)
    finally:
        srv.stop()
