"""The embed stage: every distinct feature string embedded once, cached on disk by model.

Features repeat heavily ("Uses markdown" turns up in thousands of pieces), so the stage
embeds distinct strings only and expands the rows back to the input order. Vectors are kept
in an :class:`~featdisco.storage.embed_cache.EmbeddingCache` so a rerun, a resumed run or
another run over overlapping data pays only for strings it has never seen; the matrix goes
to disk row by row (:class:`~featdisco.storage.matrix.NpyWriter`), never held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from featdisco.embedders.base import Embedder, EmbedderError, check_output
from featdisco.rundir import EMBED_CACHE
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.storage.embed_cache import EmbeddingCache, text_key
from featdisco.storage.matrix import NpyWriter

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 1

@dataclass
class EmbedStats:
    """What one :func:`embed_distinct` call did, for the run summary."""

    texts: int = 0
    distinct: int = 0
    cached: int = 0
    embedded: int = 0
    batches: int = 0


class RowSink(Protocol):
    """Where embedded rows go: an array in memory or a ``.npy`` file on disk."""

    def write(self, rows: NDArray[np.int64], x: NDArray[np.float32]) -> None:
        """Store ``x[i]`` as row ``rows[i]``."""
        ...


class ArraySink:
    """Rows into an in-memory matrix (the Python API's small inputs)."""

    def __init__(self, out: NDArray[np.float32]) -> None:
        self.out = out

    def write(self, rows: NDArray[np.int64], x: NDArray[np.float32]) -> None:
        self.out[rows] = x


def fill_from_cache(cache: EmbeddingCache | None, name: str, dim: int, keys: Sequence[bytes],
                    out: RowSink, chunk: int = 65_536) -> NDArray[np.int64]:
    """Write the cached rows of ``keys`` to ``out`` (a chunk at a time, so a resumed run over
    millions of strings never holds them all); return the positions not in the cache."""
    if cache is None:
        return np.arange(len(keys), dtype=np.int64)
    missing: list[NDArray[np.int64]] = []
    for s in range(0, len(keys), chunk):
        found, rows = cache.get(name, dim, keys[s:s + chunk])
        pos = np.arange(s, s + len(found), dtype=np.int64)
        if len(rows):
            out.write(pos[found], rows)
        missing.append(pos[~found])
    return np.concatenate(missing) if missing else np.zeros(0, dtype=np.int64)


def length_order(embedder: Embedder, strings: Sequence[str],
                 todo: NDArray[np.int64]) -> NDArray[np.int64]:
    """``todo`` shortest first (by the backend's ``token_lengths`` when it has one), so each
    batch pads to a similar length."""
    texts = [strings[int(i)] for i in todo]
    lengths_of = getattr(embedder, "token_lengths", None)
    lengths = lengths_of(texts) if callable(lengths_of) else [len(t) for t in texts]
    return todo[np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")]


def embed_into(
    strings: Sequence[str],
    embedder: Embedder,
    out: RowSink,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    stats: EmbedStats | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Embed distinct ``strings`` into ``out`` row by row: cached rows first, the rest in
    batches stored in ``cache`` as they finish, so an interrupted call resumes where it
    stopped and nothing but one batch is ever held in memory."""
    if batch_size < 1:
        raise EmbedderError("batch_size must be at least 1")
    dim = int(embedder.dim)
    st = stats if stats is not None else EmbedStats()
    keys = [text_key(t) for t in strings] if cache is not None else []
    missing = (fill_from_cache(cache, embedder.name, dim, keys, out) if cache is not None
               else np.arange(len(strings), dtype=np.int64))
    st.cached = len(strings) - len(missing)
    order = length_order(embedder, strings, missing)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        x = check_output(np.asarray(embedder.embed([strings[i] for i in idx])),
                         len(idx), dim, embedder.name)
        out.write(idx, x)
        if cache is not None:
            cache.put(embedder.name, [keys[i] for i in idx], x)
        st.embedded += len(idx)
        st.batches += 1
        if progress is not None:
            progress(st.embedded, len(order))


def embed_distinct(
    texts: Sequence[str],
    embedder: Embedder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    stats: EmbedStats | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed each distinct string of ``texts`` once.

    Returns ``(vectors, inverse)``: one row per distinct string in order of first
    appearance, and for each input its row, so ``vectors[inverse]`` is aligned with
    ``texts``. ``progress(done, total)`` is told after each batch.
    """
    if batch_size < 1:
        raise EmbedderError("batch_size must be at least 1")
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts),
                          dtype=np.int64, count=len(texts))
    distinct = list(index)
    del index
    vectors = np.empty((len(distinct), int(embedder.dim)), dtype=np.float32)
    st = stats if stats is not None else EmbedStats()
    st.texts, st.distinct = len(texts), len(distinct)
    embed_into(distinct, embedder, ArraySink(vectors), cache, batch_size, st, progress)
    return vectors, inverse




class EmbedStage(Stage):
    """``features.parquet`` → ``embeddings.npy`` (one row per distinct string, in the order
    of ``strings.parquet``)."""

    name = "embed"
    version = STAGE_VERSION
    reads = ("features.parquet",)
    writes = ("embeddings.npy", "strings.parquet")
    backends = ("embedder",)

    def run(self, ctx: StageContext) -> StageResult:
        features = ctx.read_table("features.parquet", columns=["text"])
        strings = pc.unique(features.column("text")).to_pylist() if features.num_rows else []
        strings.sort()
        n_features = features.num_rows
        del features  # the matrix may be large; hold no more than the strings meanwhile
        embedder = ctx.embedder
        dim = int(embedder.dim)
        cache = EmbeddingCache(ctx.cache_path(EMBED_CACHE))
        writer = NpyWriter(ctx.output("embeddings.npy"), len(strings), dim)
        try:
            ctx.executor.embed(strings, embedder, cache, writer)
            writer.commit()
        finally:
            writer.abort()  # no-op after commit
            cache.close()
        ctx.write_table("strings.parquet", pa.table({
            "string_id": pa.array(range(len(strings)), pa.int64()),
            "text": pa.array(strings, pa.string())}))
        return StageResult({"features": n_features, "distinct_strings": len(strings), "dim": dim})
