"""Embeddings cached on disk by (embedder name, sha256 of the text), shared across runs.

The cache is SQLite in WAL mode, one row per vector as a float32 blob in a rowid table
(appends go to the end of the table; a 1.5 kB row fits in a page, where a WITHOUT ROWID
table would spill each one to an overflow page) with a unique index on the key:

* appends commit once per batch, so a crash loses at most the batch in flight and never
  leaves a half-written vector visible (SQLite's journal makes each commit atomic);
* look-ups go by primary key in chunks, which stays fast at millions of rows, and several
  processes may read and append at once (SQLite's file lock serialises the writers);
* a row's blob length is checked against the model's recorded ``dim``, so a changed model
  under an old name fails loudly rather than returning vectors of the wrong shape.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featdisco.embedders.base import EmbedderError

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
