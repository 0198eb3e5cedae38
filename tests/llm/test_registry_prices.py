"""Backend selection from flags and environment; prices and their overrides."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import Usage
from featdisco.llm.openai import OpenAILLM
from featdisco.llm.prices import PriceTable, estimate_tokens
from featdisco.llm.registry import make_llm, resolve_backend

ENV = ("FEATDISCO_LLM", "FEATDISCO_MODEL", "FEATDISCO_BASE_URL", "OPENAI_API_KEY",
       "ANTHROPIC_API_KEY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ENV:
        monkeypatch.delenv(v, raising=False)


def test_nothing_configured_means_local_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    made: dict[str, object] = {}

    class FakeLocal:
        name, model = "local", "qwen"

        def __init__(self, model_path: str | None = None, n_ctx: int = 4096,
                     n_threads: int | None = None) -> None:
            made.update(model_path=model_path, n_ctx=n_ctx)

    monkeypatch.setitem(sys.modules, "featdisco.llm.local",
                        types.SimpleNamespace(LocalLLM=FakeLocal))
    with caplog.at_level(logging.WARNING):
        llm = make_llm(n_ctx=2048)
    assert isinstance(llm, FakeLocal) and made == {"model_path": None, "n_ctx": 2048}
    assert "demo quality" in caplog.text and len(caplog.records) == 1
    caplog.clear()
    make_llm("local")  # asked for explicitly: no nagging
    assert "demo quality" not in caplog.text


def test_selection_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend() == ("local", True)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    assert resolve_backend() == ("anthropic", False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert resolve_backend() == ("openai", False)
    monkeypatch.setenv("FEATDISCO_LLM", "Anthropic")
    assert resolve_backend() == ("anthropic", False)
    assert resolve_backend("openai") == ("openai", False)


def test_openai_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATDISCO_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FEATDISCO_MODEL", "qwen2.5")
    llm = make_llm(json_mode="prompt", concurrency=300)
    assert isinstance(llm, OpenAILLM)
    assert (llm.model, llm.base_url, llm.json_mode, llm.concurrency) == (
        "qwen2.5", "http://127.0.0.1:9/v1", "prompt", 300)


def test_clear_errors() -> None:
    with pytest.raises(FeatdiscoError, match="openai, anthropic, local"):
        make_llm("litellm")
    with pytest.raises(FeatdiscoError, match="OPENAI_API_KEY"):
        make_llm("openai")
    with pytest.raises(FeatdiscoError, match="--model is required"):
        make_llm("openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(FeatdiscoError, match="unknown LLM option"):
        make_llm("openai", "m", "http://x/v1", colour="red")


def test_anthropic_without_a_key_says_so() -> None:
    pytest.importorskip("anthropic")  # the optional extra (featdisco[anthropic])
    with pytest.raises(FeatdiscoError, match="ANTHROPIC_API_KEY"):
        make_llm("anthropic")


def test_anthropic_backend_builds_tool_call(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("anthropic")
    from featdisco.llm.anthropic import AnthropicLLM
    from featdisco.llm.base import ChatMessage, LLMRequest

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    llm = make_llm("anthropic", "claude-haiku-4-5")
    assert isinstance(llm, AnthropicLLM)
    req = LLMRequest((ChatMessage("system", "sys"), ChatMessage("user", "u")),
                     schema={"type": "object", "properties": {}}, schema_name="features")
    p = llm.request_params(req)
    assert p["system"] == "sys" and [m["role"] for m in p["messages"]] == ["user"]
    assert p["tool_choice"] == {"type": "tool", "name": "features"}
    assert p["tools"][0]["input_schema"] == req.schema


def test_prices(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = PriceTable()
    assert t.cost("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000)) == pytest.approx(0.75)
    assert t.lookup("gpt-4o-mini-2024-07-18") == t.lookup("gpt-4o-mini")
    assert t.lookup("openai/gpt-4.1") == (2.0, 8.0)
    assert t.cost("local", "anything", Usage(10**6, 10**6)) == 0.0
    with caplog.at_level(logging.WARNING):
        assert t.cost("openai", "my-vllm-model", Usage(1, 1)) is None
        assert t.cost("openai", "my-vllm-model", Usage(1, 1)) is None
    assert caplog.text.count("my-vllm-model") == 1
    f = tmp_path / "prices.toml"
    f.write_text('[prices]\n"my-vllm-model" = { input = 0.5, output = 1.5 }\n'
                 '"gpt-4o" = [1, 2]\n')
    t2 = PriceTable(f)
    assert t2.lookup("my-vllm-model") == (0.5, 1.5) and t2.lookup("gpt-4o") == (1.0, 2.0)
    (tmp_path / "bad.json").write_text('{"m": "cheap"}')
    with pytest.raises(FeatdiscoError, match="price for 'm'"):
        PriceTable(tmp_path / "bad.json")
    assert estimate_tokens("a" * 400) == 100
