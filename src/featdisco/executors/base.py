"""Where featurize and embed run: one protocol, a local and a Ray implementation.

An executor decides only *where* the work happens. Both keep the same cache semantics (the
run's LLM and embedding caches are written as results arrive, by the driver) and give the
same results, so the choice never enters a stage's fingerprint, and a run started on one
executor can be resumed on the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from featdisco.errors import FeatdiscoError

if TYPE_CHECKING:
    from featdisco.llm.base import LLMBackend
    from featdisco.llm.cache import CallCache
    from featdisco.llm.engine import CallEngine, EngineOptions
    from featdisco.stages.embed import RowSink
    from featdisco.storage.embed_cache import EmbeddingCache

EXECUTORS: tuple[str, ...] = ("local", "ray")


class Executor(Protocol):
    name: str

    def make_engine(self, backend: LLMBackend, cache: CallCache, cfg: Any,
                    options: EngineOptions) -> CallEngine:
        """The engine the LLM stages call (``cfg`` is the :class:`PipelineConfig`;
        ``options`` the :class:`CallEngine` keyword arguments)."""
        ...

    def embed(self, strings: Sequence[str], embedder: Any, cache: EmbeddingCache | None,
              cfg: Any, out: RowSink) -> None:
        """Write one unit-norm float32 row per distinct string into ``out`` (row i for
        ``strings[i]``), storing new rows in ``cache`` as they arrive."""
        ...


def make_executor(name: str | None) -> Executor:
    name = (name or "local").lower()
    if name == "local":
        from featdisco.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from featdisco.executors.ray import RayExecutor

        return RayExecutor()
    raise FeatdiscoError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
