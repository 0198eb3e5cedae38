"""No API key in the cache, logs, results or summaries — even when the server echoes it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine
from featdisco.llm.registry import make_llm
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features
from tests.llm.conftest import requests_for

KEY = "sk-proj-SECRETxyz0123456789abcdefTAIL"


def test_api_key_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("FEATDISCO_LLM", raising=False)

    def handler(req: FakeRequest) -> Reply:
        if req.key.startswith("auth"):  # like OpenAI: echo a masked key in the error
            return Reply(status=401, raw_body=(
                '{"error": {"message": "Incorrect API key provided: sk-proj-****TAIL. '
                f'Full: {KEY}"' + "}}").encode())
        if req.key.startswith("down"):
            return Reply(status=500, raw_body=f'{{"error": {{"message": "{KEY}"}}}}'.encode())
        return echo_features(req)

    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(handler, api_key=KEY) as fake:
        backend = make_llm("openai", "gpt-4o-mini", fake.base_url, concurrency=8)
        cache = CallCache(tmp_path / "calls.sqlite")
        engine = CallEngine(backend, cache, progress="log", max_retries=1, backoff_base=0.01)
        results = engine.run_sync(requests_for(["ok one", "down again"]))
        with pytest.raises(FeatdiscoError) as stopped:
            engine.run_sync(requests_for(["auth fails"]))
        cache.close()
    assert [r.status for r in results] == ["ok", "failed"]  # the key was used and accepted
    assert "(auth)" in str(stopped.value)
    texts = [repr(results), str(engine.summary), repr(backend), repr(engine.last_summary),
             caplog.text, str(stopped.value), *(r.message or "" for r in results)]
    for f in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        texts.append(f.read_bytes().decode("latin-1"))
    blob = "\n".join(texts)
    assert "sk-proj" not in blob
    assert "SECRET" not in blob and "TAIL" not in blob
