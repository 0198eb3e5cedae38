"""Fixtures for the LLM tests: a fake server per test and requests it knows how to answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from featdisco.llm.base import ChatMessage, LLMRequest, Sampling
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine
from featdisco.llm.openai import OpenAILLM
from tests.fakes.openai_server import FakeOpenAIServer

SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["echo", "features"],
    "properties": {"echo": {"type": "string"},
                   "features": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
}


def requests_for(texts: list[str], prompt_version: str = "test-v1",
                 schema: dict[str, Any] | None = SCHEMA) -> list[LLMRequest]:
    return [LLMRequest((ChatMessage("system", "Describe the piece."), ChatMessage("user", t)),
                       schema=schema, sampling=Sampling(max_tokens=200),
                       prompt_version=prompt_version) for t in texts]


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[CallCache]:
    with CallCache(tmp_path / "calls.sqlite") as c:
        yield c


def make_engine(fake: FakeOpenAIServer, cache: CallCache | None, **kw: Any) -> CallEngine:
    backend = OpenAILLM("gpt-4o-mini", base_url=fake.base_url, api_key="sk-test",
                        concurrency=kw.get("concurrency", 16))
    kw.setdefault("progress", "none")
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("seed", 0)
    return CallEngine(backend, cache, **kw)
