"""Which provider batches this run has paid for, kept beside the call cache.

A provider batch takes minutes to a day. If featdisco is stopped meanwhile, the next run
must poll the batches already submitted rather than submit (and pay for) them again, and
must be able to validate their results without the run that built them. So every batch is
recorded, with each request key it covers, that key's prompt version and its JSON Schema,
in two tables of the run's LLM cache file (its own connection; SQLite's WAL lets it share
the file with the :class:`CallCache`).

The row is written right after the provider accepts the batch; a kill in the instant
between the provider's reply and that commit is the one case that can pay twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featdisco.llm.cache import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,            -- 'submitted' (ours to poll) or 'collected'
    requests INTEGER NOT NULL,
    schemas TEXT NOT NULL,           -- JSON list of [schema_name, schema]; items index it
    created REAL NOT NULL,
    updated REAL NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id TEXT NOT NULL,
    key TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    schema_idx INTEGER,              -- NULL: free text
    PRIMARY KEY (batch_id, key)
);
CREATE INDEX IF NOT EXISTS batch_items_key ON batch_items (key);
"""


@dataclass(frozen=True, slots=True)
class PendingItem:
    """One submitted request: enough to validate and store its result on any later run."""

    key: str
    prompt_version: str
    schema: Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    provider: str
    status: str
    requests: int


class BatchStore:
    """The ``batches`` and ``batch_items`` tables; one writer (the driver) at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_db(self.path, _SCHEMA)

    def add(self, batch_id: str, provider: str, backend: str, model: str,
            items: Iterable[tuple[str, str, str, Mapping[str, object] | None]]) -> None:
        """Record a submitted batch and its items ``(key, prompt_version, schema_name,
        schema)`` in one transaction."""
        schemas: list[list[Any]] = []
        index: dict[str, int] = {}
        rows: list[tuple[str, str, str, int | None]] = []
        for key, version, name, schema in items:
            idx = None
            if schema is not None:
                blob = json.dumps([name, schema], sort_keys=True)
                idx = index.setdefault(blob, len(index))
                if idx == len(schemas):
                    schemas.append([name, schema])
            rows.append((batch_id, key, version, idx))
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (batch_id, provider, backend, model, "submitted", len(rows),
                              json.dumps(schemas), now, now, None))
            self._db.executemany("INSERT OR REPLACE INTO batch_items VALUES (?,?,?,?)", rows)

    def pending(self, backend: str, model: str) -> list[BatchRecord]:
        """Batches submitted for this backend and model and not yet collected."""
        rows = self._db.execute(
            "SELECT id, provider, status, requests FROM batches WHERE status='submitted' "
            "AND backend=? AND model=? ORDER BY created", (backend, model))
        return [BatchRecord(*r) for r in rows]

    def pending_keys(self, backend: str, model: str) -> set[str]:
        rows = self._db.execute(
            "SELECT i.key FROM batch_items i JOIN batches b ON b.id = i.batch_id "
            "WHERE b.status='submitted' AND b.backend=? AND b.model=?", (backend, model))
        return {r[0] for r in rows}

    def items(self, batch_id: str) -> dict[str, PendingItem]:
        row = self._db.execute("SELECT schemas FROM batches WHERE id=?", (batch_id,)).fetchone()
        schemas = json.loads(row[0]) if row else []
        out: dict[str, PendingItem] = {}
        for key, version, idx in self._db.execute(
                "SELECT key, prompt_version, schema_idx FROM batch_items WHERE batch_id=?",
                (batch_id,)):
            out[key] = PendingItem(key, version, None if idx is None else schemas[idx][1])
        return out

    def mark(self, batch_id: str, status: str, detail: str | None = None) -> None:
        self._db.execute("UPDATE batches SET status=?, detail=?, updated=? WHERE id=?",
                         (status, detail, time.time(), batch_id))

    def all(self) -> list[BatchRecord]:
        return [BatchRecord(*r) for r in self._db.execute(
            "SELECT id, provider, status, requests FROM batches ORDER BY created")]

    def close(self) -> None:
        self._db.close()
