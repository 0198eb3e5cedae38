"""The api: embedder against a real HTTP server on 127.0.0.1, through the official SDK."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from featdisco.embedders import EmbedderError, make_embedder
from featdisco.embedders.api import ApiEmbedder
from featdisco.storage.embed_cache import EmbeddingCache

from .conftest import embed_rows
from .embeddings_server import DIM, EmbeddingsServer, fake_vector

KEY = "sk-test-0123456789abcdefghij"


@pytest.fixture
def server() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "FEATDISCO_EMBED_API_KEY", "FEATDISCO_EMBED_BASE_URL",
                "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


def _expected(texts: list[str]) -> np.ndarray:
    x = np.stack([fake_vector(t or " ") for t in texts])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_batched_normalised_in_order(server: EmbeddingsServer,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATDISCO_EMBED_API_KEY", KEY)
    e = make_embedder("api:text-embedding-test", base_url=server.base_url, batch_size=4, dim=DIM)
    texts = [f"Feature number {i}" for i in range(10)] + [""]
    x = e.embed(texts)
    assert e.name == "api:text-embedding-test" and e.dim == DIM
    np.testing.assert_allclose(x, _expected(texts), atol=1e-6)
    assert [len(r["input"]) for r in server.requests] == [4, 4, 3]
    assert {r["model"] for r in server.requests} == {"text-embedding-test"}
    assert {r["encoding_format"] for r in server.requests} == {"float"}
    assert server.requests[-1]["input"][-1] == " "  # empty strings are not sent empty
    assert all(r["authorization"] == f"Bearer {KEY}" for r in server.requests)


def test_key_from_openai_env_dim_probed_base64(server: EmbeddingsServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("FEATDISCO_EMBED_BASE_URL", server.base_url)
    e = ApiEmbedder("m", encoding_format="base64")
    assert e.dim == DIM  # learned from one probe request
    np.testing.assert_allclose(e.embed(["a", "b"]), _expected(["a", "b"]), atol=1e-6)
    assert len(server.requests) == 2 and server.requests[1]["encoding_format"] == "base64"


def test_with_cache_embeds_each_distinct_string_once(server: EmbeddingsServer,
                                                     tmp_path: Path) -> None:
    e = ApiEmbedder("m", base_url=server.base_url, api_key=KEY, dim=DIM, batch_size=100)
    texts = ["Uses markdown", "Polite tone", "Uses markdown"] * 5
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        x1 = embed_rows(texts, e, cache)
        x2 = embed_rows(texts, e, cache)
    assert [sorted(r["input"]) for r in server.requests] == [["Polite tone", "Uses markdown"]]
    np.testing.assert_array_equal(x1, x2)


def test_bad_key_is_a_clear_error_without_the_key(server: EmbeddingsServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    caplog.set_level(logging.DEBUG)
    e = ApiEmbedder("m", base_url=server.base_url, api_key=wrong, dim=DIM, max_retries=0)
    with pytest.raises(EmbedderError, match="failed") as info:
        e.embed(["x"])
    shown = str(info.value) + repr(e) + caplog.text
    assert wrong not in shown and wrong[-6:] not in shown and "sk-wr" not in shown
    assert "401" in str(info.value) or "Incorrect API key" in str(info.value)


def test_no_key_and_no_server_is_a_clear_error() -> None:
    with pytest.raises(EmbedderError, match="FEATDISCO_EMBED_API_KEY or OPENAI_API_KEY"):
        make_embedder("api:text-embedding-3-small")
    with pytest.raises(EmbedderError, match="unknown embedder"):
        make_embedder("api:")


def test_local_server_needs_no_key() -> None:
    with EmbeddingsServer(api_key=None) as srv:
        e = ApiEmbedder("nomic-embed-text", base_url=srv.base_url)
        assert e.embed(["hello"]).shape == (1, DIM)
        assert "no-key-needed" in srv.requests[0]["authorization"]
