"""The anthropic backend and the fake's other faces: Messages API, embeddings, subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply, echo_features
from tests.llm.conftest import SCHEMA, requests_for

REPO = Path(__file__).resolve().parents[2]


def test_anthropic_tool_json_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("anthropic")
    from featdisco.llm.anthropic import AnthropicLLM

    seen: list[dict[str, Any]] = []

    def handler(req: FakeRequest) -> Reply:
        seen.append(req.body)
        if req.key == "busy" and req.attempt == 1:
            return Reply(status=529, raw_body=b'{"type": "error", "error": {"type": '
                                              b'"overloaded_error", "message": "busy"}}')
        if req.key == "no":
            return Reply(content="I can't help with that.", refusal="refused")
        return echo_features(req)

    with FakeOpenAIServer(handler, api_key="sk-ant-test") as fake:
        llm = AnthropicLLM("claude-haiku-4-5", base_url=fake.root_url, api_key="sk-ant-test")
        engine = CallEngine(llm, CallCache(tmp_path / "c.sqlite"), progress="none",
                            backoff_base=0.01)
        ok, busy, no = engine.run_sync(requests_for(["hello", "busy", "no"]))
    assert ok.status == "ok" and ok.data["echo"] == "hello"
    assert busy.status == "ok" and busy.attempts == 2  # 529 overloaded is retried
    assert (no.status, no.reason) == ("failed", "refusal")
    body = seen[0]
    assert body["tools"][0]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "reply"}
    assert body["system"] == "Describe the piece."
    assert ok.usage.input_tokens > 0 and ok.cost is not None and ok.cost > 0


def test_fake_embeddings_are_deterministic(fake: FakeOpenAIServer) -> None:
    import openai

    client = openai.OpenAI(api_key="x", base_url=fake.base_url, max_retries=0)
    a = client.embeddings.create(model="m", input=["apples", "pears"]).data
    b = client.embeddings.create(model="m", input="apples").data
    assert len(a) == 2 and len(a[0].embedding) == 384
    assert a[0].embedding == b[0].embedding and a[0].embedding != a[1].embedding
    assert abs(sum(x * x for x in a[0].embedding) - 1.0) < 1e-6


def test_fake_runs_as_a_subprocess() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        word, port = proc.stdout.readline().split()
        assert word == "READY"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
            data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "k"}]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            reply = json.loads(r.read())
        assert json.loads(reply["choices"][0]["message"]["content"])["echo"] == "k"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as r:
            stats = json.loads(r.read())
        assert (stats["total"], stats["hits"], stats["rate_limited"]) == (1, {"k": 1}, 0)
    finally:
        proc.terminate()
        proc.wait(10)
