"""A run is a directory: one Parquet (or .npy) artefact per stage, the LLM and embedding
caches, and ``manifest.json`` saying what produced each artefact.

A stage is skipped when its *fingerprint* — a hash of its config, its prompt version, its
code version and the content hashes of the artefacts it reads — matches the manifest and
its outputs exist.
Names and timestamps of files play no part, so renaming inputs changes nothing while editing
one prompt reruns exactly the stages downstream of it. Work inside a stage is resumable
through the caches, so a killed stage restarts cheaply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
LLM_CACHE = "llm_cache.sqlite"
EMBED_CACHE = "embed_cache"
_TRACKED_PACKAGES = ("featdisco", "pyarrow", "numpy", "faiss-cpu", "onnxruntime", "openai",
                     "anthropic", "llama_cpp_python", "scikit-learn")


def reset_peak_rss() -> None:
    """Start a new peak-memory window (Linux: ``clear_refs`` 5 resets VmHWM), so each stage
    records its own peak rather than the run's so far. Elsewhere a no-op."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident memory since :func:`reset_peak_rss` (or since start), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (config dicts, prompt versions, content hashes)."""
    raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(raw).hexdigest()[:24]


_HASH_ROWS = 65_536


class TableHasher:
    """:func:`table_hash` fed a batch at a time, so a stage can hash what it streams to
    disk without holding it: rows are regrouped into the same 65,536-row blocks, so the
    digest equals ``table_hash`` of the whole table however the batches were cut."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self._h = hashlib.sha256(orjson.dumps(columns))
        self._pending: list[pa.Table] = []
        self._rows = 0

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        part = (batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch]))
        self._pending.append(part.select(self.columns))
        self._rows += part.num_rows
        if self._rows >= _HASH_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        table = pa.concat_tables(self._pending).combine_chunks()
        whole = table.num_rows if final else table.num_rows - table.num_rows % _HASH_ROWS
        for block in table.slice(0, whole).to_batches(max_chunksize=_HASH_ROWS):
            self._h.update(orjson.dumps(block.to_pydict(), default=str))
        rest = table.slice(whole)
        self._pending, self._rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def hexdigest(self) -> str:
        if self._pending:
            self._flush(final=True)
        return self._h.hexdigest()[:24]


def table_hash(table: pa.Table, columns: list[str]) -> str:
    """Content hash of the given columns, independent of Parquet encoding and file name."""
    h = TableHasher(columns)
    h.update(table)
    return h.hexdigest()


class TableWriter:
    """Record batches streamed into a Parquet file under a temporary name; the file takes
    its real name only when :meth:`commit` is called, so a crash or an error mid-stage never
    leaves a partial artefact where a finished one is expected."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._tmp, schema,
                                                                 compression="zstd")

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        assert self._writer is not None, "written after commit or abort"
        if isinstance(batch, pa.Table):
            self._writer.write_table(batch)
        else:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def commit(self) -> Path:
        assert self._writer is not None, "committed twice or after abort"
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (a no-op after :meth:`commit`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._tmp.unlink(missing_ok=True)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass(slots=True)
class StageRecord:
    """What the manifest keeps about one finished stage."""

    fingerprint: str
    outputs: list[str]
    output_hash: str
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    llm: dict[str, Any] | None = None
    complete: bool = True
    finished_at: str = ""
    peak_rss_mib: float = 0.0  # the process's peak resident memory during the stage


class RunLock:
    """One process at a time works in a run directory.

    Two runs in one directory would each send the calls the other is sending (paying
    twice) and overwrite each other's artefacts. The lock is ``flock`` on ``.lock``, so the
    kernel releases it when its process ends, even by kill -9: a crashed run never blocks
    the next. Holding it also makes it safe to delete temporary files that a killed run
    left behind. Where ``fcntl`` does not exist (Windows) there is no lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FeatdiscoError(f"another featdisco process (pid {holder}) is working in "
                                 f"{self.path}: wait for it to finish or stop it, then rerun "
                                 "(finished work is kept)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fd = fd
        for stale in self.path.glob(".*.tmp-*"):  # from a run that was killed mid-write
            stale.unlink(missing_ok=True)

    def holder(self) -> str | None:
        """The pid of another process working in the directory now, else None."""
        if fcntl is None or self._fd is not None or not (self.path / ".lock").exists():
            return None
        fd = os.open(self.path / ".lock", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)  # also drops the shared lock, if it was granted

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class RunDir:
    """The run directory and its manifest; writes are atomic (temp file, then rename)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        mpath = self.path / MANIFEST
        if not mpath.exists():
            return {"created": _now(), "stages": {}}
        try:
            data = orjson.loads(mpath.read_bytes())
        except orjson.JSONDecodeError as e:
            raise FeatdiscoError(f"{mpath}: manifest is not valid JSON ({e}); delete it to rerun "
                                 "every stage (the caches still make that cheap)") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise FeatdiscoError(f"{mpath}: not a featdisco manifest")
        return data

    @property
    def exists(self) -> bool:
        return (self.path / MANIFEST).exists()

    def file(self, name: str) -> Path:
        return self.path / name

    def stage(self, name: str) -> StageRecord | None:
        raw = self.manifest["stages"].get(name)
        return StageRecord(**raw) if isinstance(raw, dict) else None

    def is_current(self, name: str, fp: str) -> StageRecord | None:
        """The stage's record if it finished with this fingerprint and its outputs exist."""
        rec = self.stage(name)
        if rec is None or rec.fingerprint != fp or not rec.complete:
            return None
        if not all((self.path / o).exists() for o in rec.outputs):
            return None
        return rec

    def record(self, name: str, rec: StageRecord) -> None:
        rec.finished_at = _now()
        if not rec.peak_rss_mib:
            rec.peak_rss_mib = round(peak_rss_mib(), 1)
        self.manifest["stages"][name] = dataclasses.asdict(rec)
        self.save()

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.save()

    def save(self) -> None:
        self.manifest["updated"] = _now()
        self.manifest["versions"] = versions()
        write_bytes_atomic(self.path / MANIFEST,
                           orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
                                        default=str))

    def write_table(self, name: str, table: pa.Table) -> Path:
        writer = self.table_writer(name, table.schema)
        try:
            writer.write(table)
            return writer.commit()
        finally:
            writer.abort()

    def table_writer(self, name: str, schema: pa.Schema) -> TableWriter:
        """A :class:`TableWriter` for artefact ``name``: commit it, or abort it on failure."""
        return TableWriter(self.path / name, schema)

    def write_stream(self, name: str, schema: pa.Schema,
                     batches: Iterable[pa.RecordBatch], hash_columns: list[str],
                     empty_error: str | None = None) -> tuple[int, str]:
        """Stream ``batches`` into artefact ``name``, hashing ``hash_columns`` on the way
        (:class:`TableHasher`), so a stage never holds its whole output; the file takes its
        name only once every batch is written. Returns the rows and the content hash.
        ``empty_error``: refuse to write an empty artefact, with this message."""
        hasher = TableHasher(hash_columns)
        writer = self.table_writer(name, schema)
        try:
            for batch in batches:
                writer.write(batch)
                hasher.update(batch)
            if empty_error is not None and writer.rows == 0:
                raise FeatdiscoError(empty_error)
            writer.commit()
        finally:
            writer.abort()
        return writer.rows, hasher.hexdigest()

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        path = self.path / name
        if not path.exists():
            raise FeatdiscoError(f"{path} is missing: run `featdisco run` first")
        return pq.read_table(path, columns=columns)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
