"""A run is a directory: one Parquet (or .npy) artefact per stage, the LLM and embedding
caches, and ``manifest.json`` saying what produced each artefact and its content hash.

The manifest keeps each artefact's content hash (with the size and mtime it was taken at,
so an unchanged file is not read again) and each stage's fingerprint; the stage runner
(:mod:`featdisco.stages.base`) compares them to decide what to redo. Work inside a stage is
resumable through the caches, so a killed stage restarts cheaply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import platform
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.llm.summary import LLMUse
from featdisco.storage.tables import TableWriter, write_bytes_atomic

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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


StageCounts = Mapping[str, object]
"""What a stage counted (pieces, features dropped by reason, notes, ...): each stage has its
own keys (a literal, or a TypedDict such as the cluster stage's ``KindCounts``); readers of
the manifest's copy check each value's type, since a run made by another version wrote it."""


# A stage's share of the LLM engine's summary (``RunSummary.as_dict`` after the stage less
# before it), as the manifest keeps it under ``stages.NAME.llm``: the engine's own record.
StageLLM = LLMUse


class ArtefactHash(TypedDict):
    """The manifest's ``artefacts.NAME``: a content hash and the size and mtime it was
    taken at, so that an unchanged file is not read again."""

    hash: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class StageRecord:
    """What the manifest keeps about one finished stage."""

    fingerprint: str
    outputs: list[str]
    output_hash: str
    counts: StageCounts = field(default_factory=dict)
    seconds: float = 0.0
    llm: StageLLM | None = None
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

    Within one process the lock is re-entrant: a command that took it (:func:`open_run`)
    can hand the run to a pipeline or an analysis that takes it again; the descriptor is
    closed when the last holder releases it.
    """

    _held: ClassVar[dict[str, list[int]]] = {}  # resolved path -> [fd, holders] in this process
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def _key(self) -> str:
        return str(self.path.resolve())

    def acquire(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        with RunLock._guard:
            held = RunLock._held.get(self._key)
            if held is not None:  # this process holds it already
                held[1] += 1
                self._fd = held[0]
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
            RunLock._held[self._key] = [fd, 1]
        for stale in self.path.glob(".*.tmp-*"):  # from a run that was killed mid-write
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (through this object or another)."""
        return fcntl is None or self._key in RunLock._held

    def holder(self) -> str | None:
        """The pid of another process working in the directory now, else None."""
        if (fcntl is None or self._fd is not None or self._key in RunLock._held
                or not (self.path / ".lock").exists()):
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
        if self._fd is None:
            return
        with RunLock._guard:
            held = RunLock._held.get(self._key)
            if held is not None and held[0] == self._fd:
                held[1] -= 1
                if held[1] <= 0:
                    del RunLock._held[self._key]
                    os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


RUN_MARKS = (MANIFEST, "pieces.parquet", "clusters.parquet")  # any one: a run (or part of one)
_WROTE = "give a folder that `featdisco run --run-dir` (or `transform -o`) wrote"


def check_run_dir(path: str | Path, what: str = "", *, create: bool = False,
                  marks: tuple[str, ...] = RUN_MARKS) -> Path:
    """The one test of whether ``path`` can be a run directory, with one wording for each
    mistake: the CLI calls it first on the paths it was given (one line, exit 2, before
    anything is read or created), and :func:`open_run` and :class:`RunDir` call it again, so
    that the API says the same. Without it a file where a run goes was a FileExistsError
    traceback and a mistyped run directory was created empty.

    ``create``: the folder may be new (it is not created here) or any folder; otherwise it
    must be a run already (a run, a transform output or a saved dictionary): it holds one
    of ``marks`` (:data:`RUN_MARKS`; ``(MANIFEST,)`` where the manifest itself is read).
    ``what`` names the argument in the message (``--run-dir``).
    """
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise FeatdiscoError(f"{name} is a file, not a run directory; "
                             f"{'give a new or existing folder' if create else _WROTE}")
    if not path.exists():
        if create:
            return path
        raise FeatdiscoError(f"{name} does not exist; {_WROTE}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise FeatdiscoError(f"{name} cannot be read (permission denied)")
    if not create and not any((path / m).is_file() for m in marks):  # no lock file in a stray folder
        raise FeatdiscoError(f"{name} is not a featdisco run (no {', '.join(marks)}); {_WROTE}")
    return path


@contextlib.contextmanager
def open_run(path: str | Path, write: bool = True, *, create: bool = False) -> Iterator[RunDir]:
    """The one entry point of every command that works in a run directory.

    ``write``: take the run's lock for the whole block (re-entrant within the process), so
    a second writer stops at once with a one-line error naming the first one's pid; the
    manifest is then changed only through :meth:`RunDir.transact` (merged per key, never
    rewritten from a stale copy). ``create``: the folder may be new (``run``); otherwise
    it must be a run already (:func:`check_run_dir`: a clear error, not an empty folder
    made by a typo).
    """
    path = check_run_dir(path, create=create)
    path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path)
    if write:
        lock.acquire()
    try:
        yield RunDir(path)
    finally:
        lock.release()


_MANIFEST_DEPTH: dict[str, int] = {}  # manifest locks held by this process (a nested transact)


@contextlib.contextmanager
def _manifest_lock(path: Path) -> Iterator[None]:
    """A short blocking lock around one read-modify-write of the manifest, so two writers
    (say, a status note beside a run) never lose each other's keys; re-entrant."""
    key = str(path.resolve())
    if fcntl is None or _MANIFEST_DEPTH.get(key):
        _MANIFEST_DEPTH[key] = _MANIFEST_DEPTH.get(key, 0) + 1
        try:
            yield
        finally:
            _MANIFEST_DEPTH[key] -= 1
        return
    fd = os.open(path / ".manifest.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _MANIFEST_DEPTH[key] = 1
        yield
    finally:
        _MANIFEST_DEPTH.pop(key, None)
        os.close(fd)


class RunDir:
    """The run directory and its manifest; writes are atomic (temp file, then rename)."""

    def __init__(self, path: str | Path) -> None:
        self.path = check_run_dir(path, create=True)  # `run`/`transform -o` reach here without open_run
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = self._load()
        self._hashes: dict[str, ArtefactHash] = {}  # artefact hashes taken since the last write

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
        with self.transact() as m:
            m["stages"][name] = dataclasses.asdict(rec)

    def update(self, **fields: Any) -> None:
        """Set top-level manifest keys, merged into the manifest as it is on disk now."""
        with self.transact() as m:
            m.update(fields)

    def merge(self, key: str, entries: Mapping[str, object]) -> None:
        """Set ``entries`` inside the manifest's dict ``key`` (e.g. one analysis or scan),
        leaving its other entries as they are on disk now."""
        with self.transact() as m:
            section = m.get(key)
            m[key] = {**(section if isinstance(section, dict) else {}), **entries}

    @contextlib.contextmanager
    def transact(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of the manifest: it is read again from disk (under a short
        lock), the block changes what it owns, and it is written back atomically. Changes
        made by another command since this one read it are kept, never overwritten."""
        with _manifest_lock(self.path):
            self.manifest = self._load()
            if self._hashes:
                self.manifest.setdefault("artefacts", {}).update(self._hashes)
            yield self.manifest
            self._write()
            self._hashes = {}

    def save(self) -> None:
        """Write what this object changed (kept for callers of the old API): the same merged
        write as :meth:`transact`, carrying the artefact hashes taken since."""
        with self.transact():
            pass

    def _write(self) -> None:
        self.manifest["updated"] = _now()
        self.manifest["versions"] = versions()
        write_bytes_atomic(self.path / MANIFEST,
                           orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
                                        default=str))

    def write_table(self, name: str, table: pa.Table) -> Path:
        writer = TableWriter(self.path / name, table.schema)
        try:
            writer.write(table)
            return writer.commit()
        finally:
            writer.abort()

    def artefact_hash(self, name: str, fresh: bool = False) -> str | None:
        """The content hash of artefact ``name`` (None when absent). Taken from the file's
        bytes, and remembered with its size and mtime so an unchanged file is read once;
        ``fresh`` hashes it again whatever the manifest says (a stage just wrote it)."""
        path = self.path / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        known = self.manifest.setdefault("artefacts", {})
        entry = known.get(name)
        if (not fresh and isinstance(entry, dict) and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns):
            return str(entry["hash"])
        digest = file_hash(path)
        known[name] = self._hashes[name] = {"hash": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return digest

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        path = self.path / name
        if not path.exists():
            raise FeatdiscoError(f"{path} is missing: run `featdisco run` first")
        return pq.read_table(path, columns=columns)


def file_hash(path: Path) -> str:
    """blake2b of a file's bytes, read a megabyte at a time."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
