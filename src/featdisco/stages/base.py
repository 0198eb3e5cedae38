"""The stage protocol and the one runner that decides, from content, what to redo.

A :class:`Stage` declares what it reads (artefacts of earlier stages, the config fields it
uses, its prompt, the backends whose identity shapes its output, its ``version``) and what it
writes. :class:`StageRunner` fingerprints exactly those declared inputs — the *content* hash
of each artefact, the values of the fields, the prompt's text — and skips the stage when the
fingerprint matches the manifest and its outputs exist. A stage reads and writes only through
the :class:`StageContext` the runner hands it, which refuses anything undeclared: an input a
stage uses but its fingerprint forgets cannot exist, so a rerun cannot keep stale results.
Outputs go to a staging folder and move into the run together once the stage succeeds.
"""

from __future__ import annotations

import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, make_dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.rundir import (
    EMBED_CACHE,
    LLM_CACHE,
    RunDir,
    StageCounts,
    StageLLM,
    StageRecord,
    fingerprint,
    reset_peak_rss,
)
from featdisco.storage.tables import TableWriter

if TYPE_CHECKING:
    from featdisco.llm.engine import CallEngine
    from featdisco.prompts import Prompt

Log = Callable[[str], None]
CACHES = (LLM_CACHE, EMBED_CACHE)


@dataclass(slots=True)
class StageResult:
    """What a stage reports: its counts, whether every unit of work succeeded (an
    incomplete stage is redone by the next run, cheaply through the caches), and a reason
    to stop the pipeline after it (the cost cap)."""

    counts: StageCounts
    complete: bool = True
    stop: str | None = None


class StageConfig:
    """Base of each stage's frozen config dataclass: reading a field the stage does not
    declare is an error, not a silent ``AttributeError`` caught somewhere."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise FeatdiscoError(f"{type(self).__name__}: the stage reads config field {name!r}, which it does "
                             "not declare (add it to its `config`)")


class Stage(ABC):
    """One step of the pipeline. Subclasses set the class attributes and :meth:`run`.

    A stage's config is a frozen dataclass (:class:`StageConfig`): either its own ``Config``
    (whose fields named like :class:`~featdisco.pipeline.PipelineConfig`'s are filled from
    it, the others keep their defaults) or one made from the ``config`` names. Its
    fingerprint is that dataclass, the content of its ``reads``, its prompt's text and the
    identity of its backends (:meth:`StageRunner.fingerprint`): nothing assembled by hand.
    """

    name: ClassVar[str]
    version: ClassVar[int]  # bump when the output for the same inputs changes
    reads: ClassVar[tuple[str, ...]] = ()  # artefacts of earlier stages (a missing one hashes as absent)
    writes: ClassVar[tuple[str, ...]] = ()  # artefacts it may write (all it writes must be here)
    config: ClassVar[tuple[str, ...]] = ()  # PipelineConfig fields that shape its output
    Config: ClassVar[type | None] = None  # its frozen config dataclass (else made from ``config``)
    prompt: ClassVar[str | None] = None  # the prompt it renders (its full text is fingerprinted)
    backends: ClassVar[tuple[str, ...]] = ()  # "llm" / "embedder": their identity is an input
    source: ClassVar[bool] = False  # reads transcripts from outside the run: runs whenever given them
    # Its own state from earlier runs (also in ``writes``): readable, not fingerprinted, as what
    # it holds is a function of the fingerprinted inputs and itself (the cluster id registry).
    state: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("Config")
        if own is not None:  # its declared fields are the config it reads
            cls.config = tuple(f.name for f in fields(own))

    @classmethod
    def config_type(cls) -> type:
        """The stage's frozen config dataclass."""
        return cls.Config if cls.Config is not None else _config_type(cls.__name__, cls.config)

    @abstractmethod
    def run(self, ctx: StageContext) -> StageResult:
        """Do the work through ``ctx``; return the counts."""


@cache
def _config_type(stage: str, names: tuple[str, ...]) -> type:
    return make_dataclass(stage.removesuffix("Stage") + "Config", [(n, Any) for n in names],
                          bases=(StageConfig,), frozen=True)


def stage_config(stage: Stage | type[Stage], config: Any) -> Any:
    """The one place a stage's config is made: its dataclass's fields, from ``config`` (the
    run's :class:`~featdisco.pipeline.PipelineConfig`) where it has them."""
    kind = stage.config_type()
    values = {f.name: getattr(config, f.name) for f in fields(kind) if hasattr(config, f.name)}
    return kind(**values)


def config_dict(settings: Any) -> dict[str, object]:
    """A stage config as the JSON-able dict that enters its fingerprint."""
    return asdict(settings) if is_dataclass(settings) and not isinstance(settings, type) else dict(settings)


class Backends(ABC):
    """What a stage may call: the runner hands these out only to stages that declare them."""

    @abstractmethod
    def identity(self, backend: str) -> Any:
        """A JSON-able identity of ``backend`` ("llm": backend and model; "embedder": name)."""

    @property
    @abstractmethod
    def engine(self) -> CallEngine: ...

    @property
    @abstractmethod
    def embedder(self) -> Any: ...

    @property
    @abstractmethod
    def executor(self) -> Any: ...

    @abstractmethod
    def prompt(self, name: str) -> Prompt: ...


class StageContext:
    """The only door between a stage and the run: declared reads, declared writes (into a
    staging folder), declared config fields, prompt and backends."""

    def __init__(self, stage: Stage, run: RunDir, staging: Path, config: Any, backends: Backends,
                 log: Log, inputs: Any = None) -> None:
        self.stage, self._run, self._staging = stage, run, staging
        self.config = stage_config(stage, config)  # frozen; an undeclared field is an error
        self._config = config
        self._backends = backends
        self.log = log
        self.inputs = inputs  # for a source stage: what to read from outside the run
        self.written: list[str] = []

    # -- reading
    def path(self, name: str) -> Path:
        if name not in self.stage.reads and name not in self.stage.state:
            raise FeatdiscoError(f"stage {self.stage.name!r} reads {name}, which it does not declare "
                                 "(add it to its `reads`)")
        return self._run.file(name)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        path = self.path(name)
        if not path.exists():
            raise FeatdiscoError(f"{path} is missing: run `featdisco run` first")
        return pq.read_table(path, columns=columns)

    # -- writing
    def output(self, name: str) -> Path:
        """Where to write artefact ``name``; it moves into the run when the stage succeeds."""
        if name not in self.stage.writes:
            raise FeatdiscoError(f"stage {self.stage.name!r} writes {name}, which it does not declare "
                                 "(add it to its `writes`)")
        if name not in self.written:
            self.written.append(name)
        return self._staging / name

    def write_table(self, name: str, table: pa.Table) -> None:
        writer = TableWriter(self.output(name), table.schema)
        try:
            writer.write(table)
            writer.commit()
        finally:
            writer.abort()

    def write_stream(self, name: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                     empty_error: str | None = None) -> int:
        """Stream ``batches`` into ``name`` without holding them; ``empty_error``: refuse an
        empty artefact with this message. Returns the rows written."""
        writer = TableWriter(self.output(name), schema)
        try:
            for batch in batches:
                writer.write(batch)
            if empty_error is not None and writer.rows == 0:
                raise FeatdiscoError(empty_error)
            writer.commit()
        finally:
            writer.abort()
        return writer.rows

    # -- what the stage declared it calls
    def _declared(self, backend: str) -> None:
        if backend not in self.stage.backends:
            raise FeatdiscoError(f"stage {self.stage.name!r} uses the {backend}, which it does not "
                                 "declare (add it to its `backends`)")

    @property
    def engine(self) -> CallEngine:
        self._declared("llm")
        return self._backends.engine

    @property
    def embedder(self) -> Any:
        self._declared("embedder")
        return self._backends.embedder

    @property
    def executor(self) -> BoundExecutor:
        """How work is spread (not what it returns): the run's executor, bound to what it
        needs to rebuild backends on workers, so a stage never sees the whole config."""
        return BoundExecutor(self._backends.executor, self._config)

    @property
    def executor_config(self) -> Any:
        """Deprecated: use ``ctx.executor.embed(strings, embedder, cache, writer)``."""
        return self._config

    def cache_path(self, name: str) -> Path:
        """A cache in the run directory: it makes work cheaper, never changes results."""
        if name not in CACHES:
            raise FeatdiscoError(f"{name} is not a cache")
        return self._run.file(name)

    @property
    def prompt(self) -> Prompt:
        if self.stage.prompt is None:
            raise FeatdiscoError(f"stage {self.stage.name!r} declares no prompt")
        return self._backends.prompt(self.stage.prompt)


@dataclass(frozen=True, slots=True)
class BoundExecutor:
    """The run's executor with the settings it rebuilds backends from on workers."""

    executor: Any
    settings: Any

    def embed(self, strings: Sequence[str], embedder: Any, cache: Any, writer: Any) -> Any:
        return self.executor.embed(strings, embedder, cache, self.settings, writer)


@dataclass(slots=True)
class StageOutcome:
    name: str
    seconds: float
    skipped: bool
    counts: StageCounts
    complete: bool = True
    stop: str | None = None
    llm: StageLLM | None = field(default=None)


class StageRunner:
    """Fingerprints, skips or runs, times, records and commits any :class:`Stage`."""

    def __init__(self, run: RunDir, config: Any, backends: Backends, log: Log) -> None:
        self.run_dir, self.config, self.backends, self.log = run, config, backends, log

    def fingerprint(self, stage: Stage) -> str:
        return fingerprint({
            "stage": stage.name,
            "version": stage.version,
            "reads": {name: self.run_dir.artefact_hash(name) for name in stage.reads},
            "config": config_dict(stage_config(stage, self.config)),
            "prompt": self.backends.prompt(stage.prompt).sha256 if stage.prompt else None,
            "backends": {b: self.backends.identity(b) for b in stage.backends},
        })

    def run(self, stage: Stage, inputs: Any = None, llm_summary: Callable[[], Mapping[str, object]] | None = None
            ) -> StageOutcome:
        reset_peak_rss()
        t0 = time.perf_counter()
        if stage.source and inputs is None:
            rec = self.run_dir.stage(stage.name)
            if rec is None or not all(self.run_dir.file(o).exists() for o in rec.outputs):
                raise FeatdiscoError(f"{self.run_dir.path} has no {stage.name} output yet: give "
                                     "transcript files to read")
            return self._done(stage, t0, True, rec.counts)
        fp = self.fingerprint(stage)
        if not stage.source and (rec := self.run_dir.is_current(stage.name, fp)) is not None:
            return self._done(stage, t0, True, rec.counts)
        staging = self.run_dir.file(f".stage-{stage.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        ctx = StageContext(stage, self.run_dir, staging, self.config, self.backends, self.log, inputs)
        before = llm_summary() if llm_summary and "llm" in stage.backends else None
        try:
            result = stage.run(ctx)
            outputs = [name for name in ctx.written if (staging / name).exists()]
            for name in outputs:  # every output moves in, then the manifest says so
                os.replace(staging / name, self.run_dir.file(name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for name in set(stage.writes) - set(outputs):  # not written this time: not current
            self.run_dir.file(name).unlink(missing_ok=True)
        hashes = {name: self.run_dir.artefact_hash(name, fresh=True) for name in outputs}
        if stage.source:  # its inputs are outside the run: its output is its fingerprint
            fp = fingerprint(stage.name, stage.version, hashes)
        delta = _delta(before, llm_summary()) if before is not None and llm_summary else None
        self.run_dir.record(stage.name, StageRecord(fp, outputs, fingerprint(hashes), result.counts,
                                                    time.perf_counter() - t0, delta,
                                                    complete=result.complete))
        out = self._done(stage, t0, False, result.counts, result.complete, result.stop, delta)
        out.llm = delta
        return out

    def _done(self, stage: Stage, t0: float, skipped: bool, counts: StageCounts,
              complete: bool = True, stop: str | None = None,
              llm: StageLLM | None = None) -> StageOutcome:
        from featdisco.llm.progress import retried_text

        seconds = time.perf_counter() - t0
        retried = retried_text((llm.get("retried_by_reason") or {}) if llm else {})  # "18 retried: timeout"
        state = "up to date, skipped" if skipped else "done" if complete else "incomplete"  # never "done" when cut short
        self.log(f"{stage.name}: {state} ({seconds:.1f}s"
                 f"{', ' + retried if retried else ''})")
        return StageOutcome(stage.name, seconds, skipped, counts, complete, stop)


def _delta(before: Mapping[str, object], after: Mapping[str, object]) -> StageLLM:
    """The stage's share of the engine's summary: numbers and counts by reason, after less
    before (the summary's keys are :class:`~featdisco.rundir.StageLLM`'s)."""
    out: dict[str, object] = {}
    for k, v in after.items():
        b = before.get(k)
        if isinstance(v, dict) and isinstance(b, dict):  # counts by reason: this stage's own
            out[k] = {r: n - b.get(r, 0) for r, n in v.items() if n - b.get(r, 0)}
        else:
            out[k] = v - b if isinstance(v, int | float) and isinstance(b, int | float) else v
    return cast(StageLLM, out)
