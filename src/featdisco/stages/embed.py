"""The embed stage: every distinct feature string embedded once, cached on disk by model.

Features repeat heavily ("Uses markdown" turns up in thousands of pieces), so the stage
embeds distinct strings only and expands the rows back to the input order. Vectors are kept
in an :class:`EmbeddingCache` keyed by (embedder name, sha256 of the text) so a rerun, a
resumed run or another run over overlapping data pays only for strings it has never seen.

The cache is SQLite in WAL mode, one row per vector as a float32 blob in a rowid table
(appends go to the end of the table; a 1.5 kB row fits in a page, where a WITHOUT ROWID
table would spill each one to an overflow page) with a unique index on the key:

* appends commit once per batch, so a crash loses at most the batch in flight and never
  leaves a half-written vector visible (SQLite's journal makes each commit atomic);
* look-ups go by primary key in chunks, which stays fast at millions of rows, and several
  processes may read and append at once (SQLite's file lock serialises the writers);
* a row's blob length is checked against the model's recorded ``dim``, so a changed model
  under an old name fails loudly rather than returning vectors of the wrong shape.

Matrices the later stages read are plain ``.npy`` files of float32, written atomically. The
run's matrix is never held whole: :class:`NpyWriter` puts each batch's rows in place as it is
embedded, and :func:`read_rows` gives the cluster stage one kind's rows at a time.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from featdisco.embedders.base import Embedder, EmbedderError, check_output

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 1

_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's variable limit

_FORMAT = 1  # PRAGMA user_version of caches this code writes
_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    dim INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    model INTEGER NOT NULL REFERENCES models(id),
    text_sha256 BLOB NOT NULL,
    vector BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS vectors_key ON vectors (model, text_sha256);
"""


def text_key(text: str) -> bytes:
    """The cache key of one string: the 32-byte sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Vectors on disk by (model name, text sha256); see the module docstring for why SQLite."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            # 16 kB pages hold ten 1.5 kB vectors with little slack (takes effect on a new
            # file only); a 64 MB page cache keeps the key index's upper levels in memory.
            self._db.execute("PRAGMA page_size=16384")
            self._db.execute("PRAGMA cache_size=-65536")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _FORMAT):
                raise EmbedderError(f"embedding cache {self.path} has format {version}, this "
                                    f"featdisco reads {_FORMAT}; delete it to start a fresh one")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {_FORMAT}")
        except sqlite3.DatabaseError as e:
            raise EmbedderError(f"embedding cache {self.path} is unreadable ({e}); "
                                "delete it to start a fresh one") from e
        self._models: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _model(self, name: str, dim: int) -> int:
        """The model's row id, created on first use; a dim clash is an error."""
        if name not in self._models:
            self._db.execute("INSERT OR IGNORE INTO models (name, dim) VALUES (?, ?)", (name, dim))
            mid, known = self._db.execute(
                "SELECT id, dim FROM models WHERE name = ?", (name,)).fetchone()
            self._models[name] = (mid, known)
        mid, known = self._models[name]
        if known != dim:
            raise EmbedderError(f"embedding cache {self.path} holds {known}-d vectors for "
                                f"{name!r}, but the embedder gives {dim}-d ones")
        return mid

    def get(self, name: str, dim: int, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Look ``keys`` up: a boolean mask of which were found, and their rows (in key
        order, float32, shape ``(mask.sum(), dim)``)."""
        mid = self._model(name, dim)
        where: dict[bytes, int] = {k: i for i, k in enumerate(keys)}
        found = np.zeros(len(keys), dtype=bool)
        pos: list[int] = []
        blobs: list[bytes] = []
        for s in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[s:s + _LOOKUP_CHUNK]
            q = ("SELECT text_sha256, vector FROM vectors WHERE model = ? AND text_sha256 IN "
                 f"({','.join('?' * len(chunk))})")
            for k, v in self._db.execute(q, (mid, *chunk)):
                if len(v) != 4 * dim:
                    raise EmbedderError(f"embedding cache {self.path} has a damaged vector "
                                        f"for {name!r}; delete the cache")
                pos.append(where[k])
                blobs.append(v)
        order = np.argsort(pos, kind="stable")
        rows = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
        found[np.asarray(pos, dtype=np.int64)] = True
        return found, rows[order].copy()

    def put(self, name: str, keys: Sequence[bytes], x: np.ndarray) -> None:
        """Store rows for ``keys`` in one transaction (all or nothing)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but rows of shape {x.shape}")
        mid = self._model(name, x.shape[1])
        with self._db:  # BEGIN ... COMMIT, ROLLBACK on error
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (model, text_sha256, vector) VALUES (?, ?, ?)",
                ((mid, k, x[i].tobytes()) for i, k in enumerate(keys)))

    def count(self, name: str | None = None) -> int:
        """Vectors held, for one model or all."""
        if name is None:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
        row = self._db.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return 0
        return int(self._db.execute(
            "SELECT COUNT(*) FROM vectors WHERE model = ?", (row[0],)).fetchone()[0])


@dataclass
class EmbedStats:
    """What one :func:`embed_texts` call did, for the run summary."""

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


class NpyWriter:
    """Rows written in place into a float32 ``.npy`` file, in any order, with ``pwrite``.

    Why not a writable memmap: every page of a memmap the process has written stays in its
    resident set until the kernel writes it back, so a 4 GB matrix shows up as 4 GB of
    RSS; pages written with ``pwrite`` belong to the OS page cache, not the process. The
    file is built under a temporary name and renamed by :meth:`commit` once every row has
    been written, so a crash leaves the old file or none, never a half-filled matrix.
    """

    def __init__(self, path: str | os.PathLike[str], n: int, dim: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.shape = (n, dim)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        self._offset = header.tell()
        self._row_bytes = 4 * dim
        self._done = np.zeros(n, dtype=bool)
        self._fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, header.getvalue())
        os.ftruncate(self._fd, self._offset + n * self._row_bytes)

    def write(self, rows: NDArray[np.int64], x: NDArray[np.float32]) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype="<f4")
        if x.shape != (len(rows), self.shape[1]):
            raise ValueError(f"{len(rows)} rows but an array of shape {x.shape}")
        order = np.argsort(rows, kind="stable")
        rows, x = rows[order], x[order]
        # one pwrite per run of consecutive rows
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            if a < b:
                os.pwrite(self._fd, x[a:b].tobytes(), self._offset + int(rows[a]) * self._row_bytes)
        self._done[rows] = True

    def commit(self) -> Path:
        """Check every row was written, sync, and move the file into place."""
        missing = int((~self._done).sum())
        if missing:
            self.abort()
            raise EmbedderError(f"{missing} of {self.shape[0]} rows of {self.path} were never "
                                "embedded")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp.unlink(missing_ok=True)


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


def embed_texts(
    texts: Sequence[str],
    embedder: Embedder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    *,
    out: np.ndarray | None = None,
    stats: EmbedStats | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Rows aligned with ``texts`` (float32, unit-norm), each distinct string embedded once.

    Pass ``out`` (e.g. a writable memmap from :func:`create_matrix`) to fill a matrix too
    large to hold twice; it is returned.
    """
    vectors, inverse = embed_distinct(texts, embedder, cache, batch_size, stats, progress)
    if out is None:
        return vectors[inverse]
    if out.shape != (len(texts), vectors.shape[1]) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(len(texts), vectors.shape[1])}")
    step = 1 << 16
    for s in range(0, len(texts), step):
        out[s:s + step] = vectors[inverse[s:s + step]]
    return out


def save_matrix(path: str | os.PathLike[str], x: np.ndarray) -> Path:
    """Write ``x`` as a float32 ``.npy``, atomically: a crash leaves the old file or none."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(x, dtype=np.float32))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


def create_matrix(path: str | os.PathLike[str], n: int, dim: int) -> np.memmap:
    """A writable float32 ``.npy`` memmap of shape ``(n, dim)``, for :func:`embed_texts`'s
    ``out``; call ``flush()`` when filled."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, dim))


def read_rows(path: str | os.PathLike[str], rows: NDArray[np.int64],
              chunk_rows: int = 32_768) -> NDArray[np.float32]:
    """Rows ``rows`` of a float32 ``.npy`` matrix, in that order, read with plain file reads.

    Why not fancy-indexing a memmap: every page a memmap touches stays in the process's
    resident set (a 4 GB matrix read once shows as 4 GB of RSS); pages read with ``pread``
    belong to the OS page cache. The file is read in sequential windows, each only as far
    as the rows it needs, so memory is the result plus one window.
    """
    rows = np.asarray(rows, dtype=np.int64)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype != np.dtype("<f4") or fortran or len(shape) != 2:
            raise EmbedderError(f"{path} is not a C-ordered float32 matrix")
        offset, (n, dim) = f.tell(), shape
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row out of range for {path} with {n} rows")
        out = np.empty((len(rows), dim), dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        fd, row_bytes = f.fileno(), 4 * dim
        a = 0
        while a < len(wanted):
            first = int(wanted[a])
            b = int(np.searchsorted(wanted, first + chunk_rows, side="left"))
            last = int(wanted[b - 1])
            buf = os.pread(fd, (last - first + 1) * row_bytes, offset + first * row_bytes)
            if len(buf) != (last - first + 1) * row_bytes:
                raise EmbedderError(f"{path} is shorter than its header says")
            block = np.frombuffer(buf, dtype=np.float32).reshape(-1, dim)
            out[order[a:b]] = block[wanted[a:b] - first]
            a = b
    return out


def load_matrix(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """Read a matrix written by :func:`save_matrix`, memory-mapped read-only by default."""
    x = np.load(Path(path), mmap_mode="r" if mmap else None, allow_pickle=False)
    if x.dtype != np.float32 or x.ndim != 2:
        raise EmbedderError(f"{path} is not a float32 matrix (dtype {x.dtype}, ndim {x.ndim})")
    return x
