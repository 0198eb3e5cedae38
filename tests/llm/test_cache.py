"""The cache key changes exactly when something that can change the reply changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from featdisco.llm.base import ChatMessage, LLMRequest, Sampling, Usage
from featdisco.llm.cache import CallCache, request_key
from featdisco.llm.engine import CallEngine
from featdisco.llm.openai import OpenAILLM
from tests.llm.conftest import SCHEMA

BASE = LLMRequest((ChatMessage("system", "s"), ChatMessage("user", "u")), schema=SCHEMA,
                  sampling=Sampling(temperature=0.0, max_tokens=100), prompt_version="v1")


def key(req: LLMRequest = BASE, backend: str = "openai", model: str = "m") -> str:
    return request_key(backend, model, req)


def test_key_changes_with_each_input() -> None:
    changed = {
        "prompt_version": dataclasses.replace(BASE, prompt_version="v2"),
        "schema": dataclasses.replace(BASE, schema={**SCHEMA, "required": ["echo"]}),
        "schema_name": dataclasses.replace(BASE, schema_name="other"),
        "no_schema": dataclasses.replace(BASE, schema=None),
        "temperature": dataclasses.replace(BASE, sampling=Sampling(temperature=0.7, max_tokens=100)),
        "max_tokens": dataclasses.replace(BASE, sampling=Sampling(max_tokens=101)),
        "top_p": dataclasses.replace(BASE, sampling=Sampling(max_tokens=100, top_p=0.9)),
        "seed": dataclasses.replace(BASE, sampling=Sampling(max_tokens=100, seed=1)),
        "messages": dataclasses.replace(BASE, messages=(ChatMessage("user", "u"),)),
        "role": dataclasses.replace(BASE, messages=(ChatMessage("system", "s"),
                                                    ChatMessage("assistant", "u"))),
    }
    keys = {name: key(r) for name, r in changed.items()}
    keys["model"] = key(model="m2")
    keys["backend"] = key(backend="anthropic")
    assert key() not in keys.values()
    assert len(set(keys.values())) == len(keys)  # each change gives its own key


def test_key_ignores_what_cannot_change_the_reply() -> None:
    reordered = dict(reversed(list(SCHEMA.items())))
    assert key(dataclasses.replace(BASE, schema=reordered)) == key()
    assert key(LLMRequest(BASE.messages, dict(SCHEMA), BASE.schema_name,
                          Sampling(temperature=0.0, max_tokens=100), "v1")) == key()
    a = CallEngine(OpenAILLM("m", base_url="http://a/v1", api_key="sk-one", concurrency=4),
                   progress="none", timeout=5)
    b = CallEngine(OpenAILLM("m", base_url="http://b/v1", api_key="sk-two", concurrency=64),
                   progress="none", timeout=99, max_retries=1)
    assert a.key(BASE) == b.key(BASE) == key()


def test_failures_are_kept_but_never_replace_success(tmp_path: Path) -> None:
    with CallCache(tmp_path / "c.sqlite") as c:
        c.put_failed("k", "openai", "m", "v1", "timeout", "slow", 3, Usage())
        stored = c.get("k")
        assert stored is not None and (stored.status, stored.reason) == ("failed", "timeout")
        c.put_ok("k", "openai", "m", "v1", '{"a": 1}', {"a": 1}, Usage(5, 6), 1)
        c.put_failed("k", "openai", "m", "v1", "timeout", "slow", 1, Usage())
        stored = c.get("k")
        assert stored is not None and stored.status == "ok" and stored.data == {"a": 1}
    with CallCache(tmp_path / "c.sqlite") as c:  # and it is on disk
        assert c.stats() == {"ok": 1}
        assert c.mean_output_tokens("openai", "m", "v1") == 6.0
