"""The persistent call cache: identical requests anywhere cost one call, reruns cost none.

SQLite in WAL mode, one row per request key. Successes are reused; failures are kept with
their reason (so a run can report them) but are never served from the cache, so the next
run retries them.

Durability: finished calls are committed at the end of the event-loop tick in which they
finished (all of that tick's results in one transaction), with ``synchronous=NORMAL``. In
WAL mode a commit is a write() into the WAL file, which survives ``kill -9`` of this process
(only an OS crash or power cut can lose the last commits), at a cost of tens of
microseconds rather than an fsync. So a killed run loses only the calls in flight, plus at
most the results of its last loop tick, which had not yet been acted on. Committing each
row on its own measured 23 us of CPU and 80-200 us of wall time per call here (the engine's
loop stalls on the write); grouping by tick brought it to about 10 us of CPU per call. Outside an event loop
every write commits at once.

What is stored is the reply, usage and provenance (backend, model, prompt version) — never
request headers or keys; failure messages are redacted by the backends before they get here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from featdisco.llm.base import LLMRequest, Sampling, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,            -- 'ok' or 'failed'
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    text TEXT,
    data TEXT,                       -- the parsed JSON reply, as JSON
    reason TEXT,
    message TEXT,
    attempts INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_prompt ON calls (prompt_version, status);
"""


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))
_schema_json: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}


def request_key(backend: str, model: str, request: LLMRequest) -> str:
    """The cache key: sha256 of canonical JSON of everything that can change the reply.

    That is the backend, model, prompt version, messages, schema (with its name, which the
    server sees) and sampling parameters — and nothing else, so concurrency, timeouts, base
    URL or key changes do not throw the cache away. Key order inside the schema does not
    matter (canonical JSON sorts keys).

    The JSON is that of one sorted dict ``{"backend", "messages", "model",
    "prompt_version", "sampling", "schema"}``, written out part by part so that the
    schema, the same object for every request of a stage, is serialised once (cached by
    identity, like its validator: schemas are not changed in place once sent). The bytes,
    and so every key already stored, are unchanged.
    """
    schema = request.schema
    if schema is None:
        schema_part = "null"
    else:
        hit = _schema_json.get((id(schema), request.schema_name))
        if hit is None or hit[0] is not schema:
            if len(_schema_json) > 256:
                _schema_json.clear()
            hit = (schema, _canonical([request.schema_name, schema]))
            _schema_json[(id(schema), request.schema_name)] = hit
        schema_part = hit[1]
    s = request.sampling
    blob = "".join((
        '{"backend":', _canonical(backend),
        ',"messages":', _canonical([[m.role, m.content] for m in request.messages]),
        ',"model":', _canonical(model),
        ',"prompt_version":', _canonical(request.prompt_version),
        ',"sampling":', _canonical({f: getattr(s, f) for f in _SAMPLING_FIELDS}),
        ',"schema":', schema_part, "}"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _to_json(data: Any) -> str:
    try:
        return orjson.dumps(data).decode()
    except (orjson.JSONEncodeError, TypeError):  # not from a JSON parser (huge ints, tuples)
        return json.dumps(data, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class CachedCall:
    key: str
    status: str
    text: str | None
    data: Any
    reason: str | None
    message: str | None
    attempts: int
    usage: Usage


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """The run's SQLite file in WAL mode, in autocommit, with ``schema`` applied; shared by
    the call cache and the batch store, which live in the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    db.executescript(schema)
    return db


class CallCache:
    """One SQLite file of finished calls. Use from one thread (the engine's event loop);
    other processes may read the file at the same time thanks to WAL."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_db(self.path, _SCHEMA)
        self._ok_rows: list[tuple[Any, ...]] = []
        self._failed_rows: list[tuple[Any, ...]] = []
        self._flush_scheduled = False

    def __repr__(self) -> str:
        return f"CallCache({str(self.path)!r})"

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedCall]:
        """Finished calls for these keys, successes and failures alike."""
        self.flush()
        out: dict[str, CachedCall] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT key, status, text, data, reason, message, attempts, input_tokens, "
                f"output_tokens FROM calls WHERE key IN ({marks})", chunk)
            for k, st, text, data, reason, msg, att, tin, tout in rows:
                out[k] = CachedCall(k, st, text, None if data is None else json.loads(data),
                                    reason, msg, att, Usage(tin, tout))
        return out

    def get(self, key: str) -> CachedCall | None:
        return self.get_many([key]).get(key)

    def put_ok(self, key: str, backend: str, model: str, prompt_version: str, text: str,
               data: Any, usage: Usage, attempts: int) -> None:
        self._put(key, "ok", backend, model, prompt_version, text,
                  None if data is None else _to_json(data),
                  None, None, attempts, usage)

    def put_failed(self, key: str, backend: str, model: str, prompt_version: str, reason: str,
                   message: str, attempts: int, usage: Usage, text: str | None = None) -> None:
        """Record a failure, unless a success is already stored (never downgrade)."""
        self._failed_rows.append(
            (key, "failed", backend, model, prompt_version, text, None, reason, message[:1000],
             attempts, usage.input_tokens, usage.output_tokens, time.time()))
        self._schedule()

    def _put(self, key: str, status: str, backend: str, model: str, prompt_version: str,
             text: str | None, data: str | None, reason: str | None, message: str | None,
             attempts: int, usage: Usage) -> None:
        self._ok_rows.append((key, status, backend, model, prompt_version, text, data, reason,
                              message, attempts, usage.input_tokens, usage.output_tokens,
                              time.time()))
        self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit every finished call not yet on disk, in one transaction."""
        self._flush_scheduled = False
        if not (self._ok_rows or self._failed_rows):
            return
        ok, self._ok_rows = self._ok_rows, []
        failed, self._failed_rows = self._failed_rows, []
        with self._db:  # BEGIN ... COMMIT
            self._db.execute("BEGIN")
            if ok:
                self._db.executemany(
                    "INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", ok)
            if failed:
                self._db.executemany(
                    "INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO "
                    "UPDATE SET status=excluded.status, text=excluded.text, "
                    "reason=excluded.reason, message=excluded.message, "
                    "attempts=calls.attempts + excluded.attempts, "
                    "input_tokens=excluded.input_tokens, output_tokens=excluded.output_tokens, "
                    "created=excluded.created WHERE calls.status != 'ok'", failed)

    def stats(self) -> dict[str, int]:
        """Row counts by status."""
        self.flush()
        return dict(self._db.execute("SELECT status, count(*) FROM calls GROUP BY status"))

    def mean_output_tokens(self, backend: str, model: str, prompt_version: str) -> float | None:
        """Observed mean reply length for this prompt, for cost estimates before a run."""
        self.flush()
        row = self._db.execute(
            "SELECT avg(output_tokens), count(*) FROM calls WHERE status='ok' AND backend=? "
            "AND model=? AND prompt_version=?", (backend, model, prompt_version)).fetchone()
        return float(row[0]) if row and row[1] else None

    def close(self) -> None:
        self.flush()
        self._db.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
