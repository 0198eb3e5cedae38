"""The default executor: the asyncio call engine and the in-process embedder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from featdisco.llm.base import LLMBackend
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine, EngineOptions
from featdisco.stages.embed import RowSink, embed_into
from featdisco.storage.embed_cache import EmbeddingCache


class LocalExecutor:
    """Everything in this process: one event loop for the calls, one embedder."""

    name = "local"

    def make_engine(self, backend: LLMBackend, cache: CallCache, cfg: Any,
                    options: EngineOptions) -> CallEngine:
        return CallEngine(backend, cache, **options)

    def embed(self, strings: Sequence[str], embedder: Any, cache: EmbeddingCache | None,
              cfg: Any, out: RowSink) -> None:
        embed_into(strings, embedder, out, cache=cache)
