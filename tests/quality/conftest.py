"""Fixtures of the planted benchmark (:mod:`tests.quality.harness`), module-scoped so that a
module's tests share one server and one set of transcripts: the scripted rater on a local
server (a module's ``HANDLER``, else :func:`~tests.quality.harness.handler`), its ``N``
planted transcripts, and an API key for the OpenAI client, set for the module only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.quality.harness import handler, write_transcripts


@pytest.fixture(scope="module", autouse=True)
def planted_api_key() -> Iterator[None]:
    """The scripted rater takes any key; unset again after the module, never leaked to others."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        yield


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(getattr(request.module, "HANDLER", handler)) as srv:
        yield srv


@pytest.fixture(scope="module")
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return write_transcripts(tmp_path_factory.mktemp("chats") / "chats.jsonl", request.module.N)
