"""Fixtures for the embedder tests: one real MiniLM per session (loading takes a second)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from featdisco.embedders.onnx_minilm import OnnxMiniLM


@pytest.fixture(scope="session")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


class CountingEmbedder:
    """Wraps an embedder and counts what reaches it, to prove what was (not) embedded.
    ``fail_after`` makes the call after that many raise, like a crash mid-run."""

    def __init__(self, inner: object, fail_after: int | None = None) -> None:
        self.inner = inner
        self.name: str = inner.name  # type: ignore[attr-defined]
        self.dim: int = inner.dim  # type: ignore[attr-defined]
        self.calls = 0
        self.texts: list[str] = []
        self.fail_after = fail_after

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.embed(texts)  # type: ignore[attr-defined]


@pytest.fixture
def counting(minilm: OnnxMiniLM) -> CountingEmbedder:
    return CountingEmbedder(minilm)


def embed_rows(texts: Sequence[str], embedder: object, cache: object = None,
               batch_size: int = 256, stats: object = None) -> np.ndarray:
    """Rows aligned with ``texts``: what the embed stage writes, each distinct string once."""
    from featdisco.stages.embed import embed_distinct

    vectors, inverse = embed_distinct(texts, embedder, cache, batch_size, stats)  # type: ignore[arg-type]
    return vectors[inverse]
