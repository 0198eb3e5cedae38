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

The usage ledger lives in the same file: once an engine has opened an invocation
(:meth:`CallCache.begin_invocation`), every call it finishes is accounted (stage or
analysis, tokens, cost, the model the reply named) in the same transaction as the call's
row, summed per kind of call within that commit (a dict update per call: a row per call
cost about 20 us of CPU, as much again as storing the call). So what a run spent is known call by call, an invocation stopped by Ctrl-C or kill -9
included (up to the calls in flight), rather than only when an invocation ends cleanly; a
run's totals and its budget are read from here (:func:`read_ledger`). A transform writes its
rows into the fitted run's file (it shares that cache) under its own run id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Mapping
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
CREATE TABLE IF NOT EXISTS invocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,               -- the run directory's run_id (its manifest.json)
    uid TEXT NOT NULL,               -- the invocation's own id (the engine's Account)
    command TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    UNIQUE (run, uid)
);
CREATE TABLE IF NOT EXISTS usage (  -- one row per kind of call finished in one commit
    invocation INTEGER NOT NULL,     -- invocations.id
    scope TEXT NOT NULL,             -- the stage or analysis whose calls they were
    status TEXT NOT NULL,            -- 'ok', 'failed': sent; 'cached', 'skipped': not sent
    reason TEXT,                     -- why they failed
    model TEXT,                      -- the model the replies said answered them
    n INTEGER NOT NULL,              -- calls
    attempts INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,              -- USD, of the calls with a known price
    unpriced INTEGER NOT NULL,       -- calls whose price is unknown
    created REAL NOT NULL
);
"""


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))
_schema_json: dict[tuple[int, str], tuple[Mapping[str, object], str]] = {}


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
        # The ledger's rows of the calls not yet committed, summed by kind of call: a commit
        # holds a loop tick's calls, so this costs a dict update per call, not a row.
        self._usage: dict[tuple[Any, ...], list[Any]] = {}
        self._flush_scheduled = False
        self.invocation: int | None = None  # the ledger's invocation; None: calls not accounted
        self.scope = ""  # the stage or analysis the calls put now belong to

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
               data: Any, usage: Usage, attempts: int, *, cost: float | None = None,
               replied_model: str | None = None) -> None:
        """Store a success; with an invocation open, account it (``cost`` in USD, None when
        unknown; ``replied_model``: the model the reply named)."""
        self._account("ok", None, attempts, usage, cost, replied_model)  # committed with the call
        self._put(key, "ok", backend, model, prompt_version, text,
                  None if data is None else _to_json(data),
                  None, None, attempts, usage)

    def put_failed(self, key: str, backend: str, model: str, prompt_version: str, reason: str,
                   message: str, attempts: int, usage: Usage, text: str | None = None, *,
                   cost: float | None = None, replied_model: str | None = None) -> None:
        """Record a failure, unless a success is already stored (never downgrade); accounted
        like a success (a failed call was still sent, and its replies paid for)."""
        self._account("failed", reason, attempts, usage, cost, replied_model)  # committed with the call
        self._failed_rows.append(
            (key, "failed", backend, model, prompt_version, text, None, reason, message[:1000],
             attempts, usage.input_tokens, usage.output_tokens, time.time()))
        self._schedule()

    # ------------------------------------------------------------------ the usage ledger
    def begin_invocation(self, run: str, uid: str, command: str | None = None) -> int:
        """Open (or, for a second engine of the same invocation, rejoin) invocation ``uid``
        on ``run``; calls put from now on are accounted under it."""
        self.flush()
        command = command or " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:2]])
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR IGNORE INTO invocations (run, uid, command, pid, started) "
                             "VALUES (?,?,?,?,?)", (run, uid, command[:200], os.getpid(), time.time()))
            row = self._db.execute("SELECT id FROM invocations WHERE run=? AND uid=?",
                                   (run, uid)).fetchone()
        self.invocation = int(row[0])
        return self.invocation

    def account(self, status: str, n: int) -> None:
        """Account ``n`` requests not sent (``cached`` or ``skipped``) under the open invocation."""
        if n > 0 and self.invocation is not None:
            self._account(status, None, 0, Usage(), 0.0, None, n)
            self._schedule()

    def _account(self, status: str, reason: str | None, attempts: int, usage: Usage,
                 cost: float | None, model: str | None, n: int = 1) -> None:
        if self.invocation is None:
            return
        key = (self.invocation, self.scope, status, reason, model)
        row = self._usage.get(key)
        if row is None:
            row = self._usage[key] = [0, 0, 0, 0, 0.0, 0]
        row[0] += n
        row[1] += attempts
        row[2] += usage.input_tokens
        row[3] += usage.output_tokens
        if cost is None:
            row[5] += n
        else:
            row[4] += cost

    def spent(self, run: str) -> float:
        """USD spent on ``run`` over every invocation (calls of unknown price count 0)."""
        self.flush()
        row = self._db.execute("SELECT total(u.cost) FROM usage u JOIN invocations i ON "
                               "i.id = u.invocation WHERE i.run = ?", (run,)).fetchone()
        return float(row[0] or 0.0)

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
        if not (self._ok_rows or self._failed_rows or self._usage):
            return
        ok, self._ok_rows = self._ok_rows, []
        failed, self._failed_rows = self._failed_rows, []
        used, self._usage = self._usage, {}
        with self._db:  # BEGIN ... COMMIT: calls and their usage are stored together
            self._db.execute("BEGIN")
            if used:
                now = time.time()
                self._db.executemany("INSERT INTO usage VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                                     [(*k, *v, now) for k, v in used.items()])
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
        self.invocation = None

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """The ledger of one run, summed by invocation, scope, status, reason and reply model."""

    invocation: int
    started: float
    command: str
    scope: str
    status: str
    reason: str | None
    model: str | None
    n: int
    attempts: int
    input_tokens: int
    output_tokens: int
    cost: float
    unpriced: int  # calls among them whose cost is unknown


def read_ledger(path: str | Path, run: str) -> list[LedgerRow] | None:
    """``run``'s usage from the ledger in the cache file ``path``, read without writing
    (another process may be adding to it); None when there is no ledger to read."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        db.execute("PRAGMA busy_timeout=10000")
        rows = db.execute(
            "SELECT u.invocation, i.started, i.command, u.scope, u.status, u.reason, u.model, "
            "sum(u.n), sum(u.attempts), sum(u.input_tokens), sum(u.output_tokens), total(u.cost), "
            "sum(u.unpriced) FROM usage u JOIN invocations i ON i.id = u.invocation "
            "WHERE i.run = ? GROUP BY u.invocation, u.scope, u.status, u.reason, u.model "
            "ORDER BY u.invocation", (run,)).fetchall()
    except sqlite3.Error:  # a cache from before the ledger, or not a cache
        return None
    finally:
        db.close()
    return [LedgerRow(*r) for r in rows]
