"""The engine's garbage-collector setting holds only while calls are in flight, and nested
runs restore the caller's setting, not each other's."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from featdisco.llm.engine import _relaxed_gc
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm.conftest import make_engine, requests_for


@pytest.fixture
def threshold() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*saved)


def test_nested_and_restored(threshold: tuple[int, int, int]) -> None:
    with _relaxed_gc(100):
        assert gc.get_threshold()[0] > 700
        with _relaxed_gc(1000):
            inner = gc.get_threshold()[0]
        assert gc.get_threshold()[0] == inner  # the outer run is still going
    assert gc.get_threshold() == threshold


def test_a_run_restores_the_threshold(fake: FakeOpenAIServer,
                                      threshold: tuple[int, int, int]) -> None:
    seen: list[int] = []
    engine = make_engine(fake, None, concurrency=64)

    async def both() -> None:
        async def watch() -> None:
            await asyncio.sleep(0)
            seen.append(gc.get_threshold()[0])
        await asyncio.gather(engine.run(requests_for([f"p{i}" for i in range(50)])), watch())
        await engine.aclose()

    asyncio.run(both())
    assert seen and seen[0] > 700
    assert gc.get_threshold() == threshold


def test_collection_left_off_when_off(threshold: tuple[int, int, int]) -> None:
    gc.set_threshold(0, 10, 10)
    with _relaxed_gc(1000):
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold()[0] == 0
