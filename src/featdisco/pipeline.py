"""The discovery run: the ordered list of stages, and the backends they may call.

What each stage reads, writes and depends on is declared on the stage
(:mod:`featdisco.stages`); :class:`~featdisco.stages.base.StageRunner` decides from the
content of those inputs what to redo. This module only holds the order and the backends.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.embedders import DEFAULT_EMBEDDER, recorded_embedder, resolve_embedder
from featdisco.errors import FeatdiscoError
from featdisco.executors.base import EXECUTORS
from featdisco.llm.base import LLMRequest
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import DRY_RUN_BATCH, Account, CallEngine, EngineOptions, RunSummary
from featdisco.llm.prices import PriceTable
from featdisco.prompts import PROMPT_NAMES, Prompt, load_prompt, saved_copy, saved_prompt_files
from featdisco.rundir import (
    LLM_CACHE,
    MANIFEST,
    RunDir,
    RunLock,
    StageRecord,
    check_run_dir,
    fingerprint,
)
from featdisco.runsummary import open_ledger, record_invocation
from featdisco.stages.assemble import AssembleStage
from featdisco.stages.base import Backends, Log, Stage, StageOutcome, StageRunner
from featdisco.stages.cluster import ClusterStage
from featdisco.stages.curate import CurateStage
from featdisco.stages.embed import EmbedStage
from featdisco.stages.featurize import (
    PLAIN_PROMPT_VERSION,
    FeaturizeConfig,
    FeaturizeStage,
    build_requests,
    dry_run_both,
)
from featdisco.stages.merge import MergeStage
from featdisco.stages.name import NameStage
from featdisco.stages.rate import RateStage
from featdisco.stages.split import UNCUT, ReadStage, SplitInputs, SplitStage, cut_batches
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import iter_pieces, piece_batches

PIPELINE: tuple[Stage, ...] = (ReadStage(), SplitStage(), FeaturizeStage(), EmbedStage(), ClusterStage(),
                               NameStage(), MergeStage(), CurateStage(), RateStage(), AssembleStage())
STAGES = tuple(s.name for s in PIPELINE)
ENCODE = ("read", "split", "featurize", "embed")  # what transform runs on new data
SPLIT = ("read", "split")  # transcripts into pieces (scan --input)


@dataclass(slots=True)
class PipelineConfig:
    """Everything that shapes a run's results. Each stage declares the fields it reads
    (its ``config``), so changing one reruns only the stages that read it."""

    llm: str | None = None
    model: str | None = None
    base_url: str | None = None
    embedder: str | None = None
    n_clusters: int | dict[str, int] | None = None
    min_features: int = 10
    max_features: int = 20
    max_piece_tokens: int = 2000
    evidence: bool = True  # a verbatim quote per feature (featurize.v2); False: plain v1 features
    max_chars: int | None = None
    sample_size: int = 100
    name_contrast: int = 0  # nearest clusters shown when naming, for a label that tells them apart
    rate_batch: int = 10
    min_cluster_size: int = 3
    merge: bool = True  # merge near-duplicate clusters after naming (stages/merge.py)
    seed: int = 0
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_cost: float | None = None
    budget: float | None = None  # USD over every invocation of the run; kept as the manifest's budget_usd
    prompt_files: dict[str, str] = field(default_factory=dict)
    # How calls are made, not what they return: none of these enter a fingerprint.
    batch: bool = False  # provider batch APIs (half price, up to 24 h)
    batch_poll: float = 30.0  # seconds between batch polls
    executor: str = "local"  # 'local' (asyncio) or 'ray' (Ray Data)
    prices: str | None = None  # price file (else FEATDISCO_PRICES, else the built-in table)
    min_transcripts: int = 1  # outputs hide clusters from fewer transcripts (analysis/visibility.py)


    def featurize_config(self) -> FeaturizeConfig:
        return FeaturizeStage.settings(self)




@dataclass(slots=True)
class RunResult:
    run_dir: Path
    clusters: pa.Table
    stages: list[StageOutcome]
    llm: RunSummary
    complete: bool
    stopped_reason: str | None = None


class Pipeline(Backends):
    """Holds the backends for one run; :meth:`run` hands each stage to the runner."""

    def __init__(self, run_dir: str | Path, config: PipelineConfig, *, llm: Any = None,
                 embedder: Any = None, log: Log | None = None, progress: str = "auto",
                 llm_cache: str | Path | None = None, prompts: dict[str, Prompt] | None = None) -> None:
        if embedder is None:  # a mistyped name is refused before the run records it or spends anything
            resolve_embedder(config.embedder)
        if (config.executor or "local").lower() not in EXECUTORS:  # so is an executor's
            raise FeatdiscoError(f"unknown executor {config.executor!r}; choose one of {', '.join(EXECUTORS)}")
        self.dir = RunDir(run_dir)
        self._lock = RunLock(self.dir.path)  # taken by whatever writes: run, transform, dry run
        # ``transform`` shares the fitted run's cache, so a piece seen at fit time is free.
        self.llm_cache_path = Path(llm_cache) if llm_cache else self.dir.file(LLM_CACHE)
        # the default embedder by name, so the run records which model made its vectors
        self.cfg = replace(config, embedder=DEFAULT_EMBEDDER) if config.embedder is None and embedder is None else config
        self.log: Log = log or (lambda _m: None)
        self.prompts = dict(prompts) if prompts is not None else self.load_prompts(config)
        self._llm = llm
        self._embedder = embedder
        self._own_embedder = embedder is None
        self._engine: CallEngine | None = None
        self._executor: Any = None
        self._progress = progress
        self.timings: list[StageOutcome] = []
        # Whose calls the engine makes, for the usage ledger; ``scope`` names the stage or
        # analysis calling now.
        self.account = Account(lambda: open_ledger(self.dir, self.llm_cache_path))

    @property
    def budget(self) -> float | None:
        """The run's budget: ``--budget`` if given, else the one the manifest keeps."""
        if self.cfg.budget is not None:
            return self.cfg.budget
        kept = self.dir.manifest.get("budget_usd")
        return float(kept) if isinstance(kept, int | float) else None

    @staticmethod
    def load_prompts(config: PipelineConfig) -> dict[str, Prompt]:
        """The run's prompts: the user's files where given (checked now, before anything is
        spent), else the packaged ones."""
        unknown = set(config.prompt_files) - set(PROMPT_NAMES)
        if unknown:
            raise FeatdiscoError(f"no prompt named {', '.join(sorted(unknown))}: a run's prompts are "
                                 f"{', '.join(PROMPT_NAMES)}")
        return {n: load_prompt(n, config.prompt_files.get(n),
                               PLAIN_PROMPT_VERSION if n == "featurize" and not config.evidence else None)
                for n in PROMPT_NAMES}

    # ------------------------------------------------------------ backends (lazy)

    @property
    def llm(self) -> Any:
        if self._llm is None:
            self._llm = self._make_llm()
        return self._llm

    def _make_llm(self, api_key: str | None = None) -> Any:
        from featdisco.llm.registry import make_llm

        return make_llm(self.cfg.llm, self.cfg.model, self.cfg.base_url,
                        concurrency=self.cfg.concurrency, api_key=api_key)

    @property
    def engine(self) -> CallEngine:
        if self._engine is None:
            options = EngineOptions(
                concurrency=self.cfg.concurrency, rpm=self.cfg.rpm, tpm=self.cfg.tpm,
                timeout=self.cfg.timeout, max_cost=self.cfg.max_cost, progress=self._progress,
                seed=self.cfg.seed, prices=PriceTable.for_run(self.cfg.prices), budget=self.budget,
                account=self.account)
            cache = CallCache(self.llm_cache_path)
            if self.cfg.batch:
                from featdisco.llm.batch import BatchEngine

                self._engine = BatchEngine(self.llm, cache, poll_interval=self.cfg.batch_poll,
                                           **options)
            else:
                self._engine = self.executor.make_engine(self.llm, cache, self.cfg, options)
        return self._engine

    @property
    def executor(self) -> Any:
        if self._executor is None:
            from featdisco.executors import make_executor

            self._executor = make_executor(self.cfg.executor)
        return self._executor

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from featdisco.embedders import make_embedder

            self._embedder = make_embedder(self.cfg.embedder)
        return self._embedder

    def identity(self, backend: str) -> Any:
        if backend == "llm":
            return {"backend": self.llm.name, "model": self.llm.model}
        if backend == "embedder":
            return self.embedder.name
        raise FeatdiscoError(f"unknown backend {backend!r}")

    def prompt(self, name: str) -> Prompt:
        return self.prompts[name]

    def lock(self) -> None:
        """Take the run directory for this process (:class:`~featdisco.rundir.RunLock`); a
        second process gets a clear error instead of paying for the same calls again."""
        self._lock.acquire()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()  # its event loop, and the connections opened on it
            if self._engine.cache is not None:
                self._engine.cache.close()
        self._lock.release()

    # ------------------------------------------------------------ running

    def run(self, inputs: Iterable[str | Path] | None = None, read_options: ReadOptions | None = None,
            transcripts: Iterable[Transcript] | None = None,
            stages: Sequence[str] = STAGES) -> RunResult:
        """Run (or skip) ``stages`` in pipeline order; stops early at the cost cap. ``split``
        brings ``read`` with it (one stage before they were two; read is skipped without inputs)."""
        if "split" in stages and "read" not in stages:
            stages = ("read", *stages)
        self.lock()
        fresh = not self.dir.exists
        self.dir.update(config=_jsonable(asdict(self.cfg)),
                        prompts={n: p.version for n, p in self.prompts.items()},
                        **({"budget_usd": self.cfg.budget} if self.cfg.budget is not None else {}))
        self.save_prompts()
        adopt_old_split(self.dir)
        runner = StageRunner(self.dir, self.cfg, self, self.log)
        source = (None if inputs is None and transcripts is None
                  else SplitInputs(list(inputs) if inputs is not None else None, read_options, transcripts))
        complete, stopped = True, None
        try:
            for stage in PIPELINE:
                if stage.name not in stages:
                    continue
                self.account.scope = stage.name
                try:
                    outcome = runner.run(stage, source if stage.source else None, self._llm_summary)
                except FeatdiscoError:
                    if stage.source and fresh:  # bad or missing input on a first run: leave no half-made run
                        self._unmake()
                    raise
                self.timings.append(outcome)
                complete = complete and outcome.complete
                if stage.name == "embed" and self._own_embedder:
                    self._embedder = None  # its model and buffers are not needed after embed
                if outcome.stop:
                    return self._result(False, outcome.stop)
            if self._engine is not None and self._engine.summary.skipped_budget > 0:
                stopped = self._engine.stop_text()
            return self._result(complete and stopped is None, stopped)
        finally:
            if self._engine is not None:  # totals over every invocation; calling nothing keeps them
                record_invocation(self.dir, self._engine.summary.as_dict(), prices=self.prices_used(),
                                  stages={t.name: t.llm for t in self.timings if t.llm})
            self.close()

    def prices_used(self) -> Mapping[str, object]:
        """The model's price and where it came from, as the manifest records it."""
        return self.engine.prices.used(self.llm.name, self.llm.model)

    def _llm_summary(self) -> Mapping[str, object]:
        return self.engine.summary.as_dict()

    def estimate(self, inputs: Iterable[str | Path] | None = None,
                 read_options: ReadOptions | None = None) -> Any:
        """Calls, tokens and cost of featurizing ``inputs`` — or, with none, the pieces this
        run already split — with and without evidence (the chosen setting first), without
        sending anything or writing to the run directory: a dry run against a finished run
        must leave it as it was."""
        if self._llm is None:  # nothing is sent, so no API key is needed to estimate
            self._llm = self._make_llm(api_key=DRY_RUN_KEY)
        fcfg = self.cfg.featurize_config()
        if inputs is not None:
            inputs = list(inputs)
            logs = [self.log]  # the second pass (the other setting) reads quietly

            def batches() -> Iterable[pa.RecordBatch]:
                log = logs.pop() if logs else (lambda _m: None)
                transcripts = read_transcripts(inputs, read_options or ReadOptions(),
                                               report=ReadReport(), log=log)
                return piece_batches(iter_pieces(transcripts, max_chars=self.cfg.max_chars),
                                     batch_rows=DRY_RUN_BATCH)
        else:
            uncut = self.dir.file(UNCUT)
            path = uncut if uncut.exists() else self.dir.file("pieces.parquet")
            if not path.exists():
                raise FeatdiscoError(f"{self.dir.path} has no pieces yet: give transcript files to read")
            columns = ["kind", "text", "chars", "truncated"] if path == uncut else ["kind", "text"]

            def batches() -> Iterable[pa.RecordBatch]:  # cut as this run's split stage would cut them
                with pq.ParquetFile(path) as pf:
                    yield from cut_batches(pf.iter_batches(batch_size=DRY_RUN_BATCH, columns=columns),
                                           self.cfg.max_chars if path == uncut else None)

        other = self.prompts["featurize"] if "featurize" in self.cfg.prompt_files else load_prompt(
            "featurize", version=None if not fcfg.evidence else PLAIN_PROMPT_VERSION)
        return dry_run_both(batches, lambda b, p, c: dry_run(b, self.engine, p, c),
                            self.prompts["featurize"], other, fcfg)

    def _unmake(self) -> None:
        """Remove what starting a run wrote in a new directory (nothing else was there)."""
        self._lock.release()
        for name in (MANIFEST, ".lock", ".manifest.lock"):
            self.dir.file(name).unlink(missing_ok=True)
        for prompt in self.prompts.values():
            saved_copy(self.dir.path, prompt).unlink(missing_ok=True)
            if saved_copy(self.dir.path, prompt).parent != self.dir.file("prompts"):
                with contextlib.suppress(OSError):
                    saved_copy(self.dir.path, prompt).parent.rmdir()
        for folder in (self.dir.file("prompts"), self.dir.path):
            with contextlib.suppress(OSError):  # not empty: something else is there; keep it
                folder.rmdir()

    def save_prompts(self) -> None:
        """Keep the exact prompt texts with the run, so ``transform`` featurizes new data
        the way the dictionary was fitted even after the package's prompts change."""
        folder = self.dir.file("prompts")
        if folder.is_dir():
            shutil.rmtree(folder)
        for prompt in self.prompts.values():
            path = saved_copy(self.dir.path, prompt)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(prompt.text, encoding="utf-8")

    def _result(self, complete: bool, reason: str | None) -> RunResult:
        clusters_path = self.dir.file("clusters.parquet")
        clusters = self.dir.read_table("clusters.parquet") if clusters_path.exists() else pa.table({})
        summary = self._engine.summary if self._engine else RunSummary()
        return RunResult(self.dir.path, clusters, self.timings, summary, complete, reason)


DRY_RUN_KEY = "dry-run-sends-nothing"  # stands in for an API key the estimate never uses


def dry_run(pieces: Iterable[pa.RecordBatch], engine: CallEngine, prompt: Prompt,
            cfg: FeaturizeConfig) -> Any:
    """Calls, tokens and cost of featurizing ``pieces`` (the bulk of a run's spend): record
    batches (kind, text) read a chunk at a time, as from ``pieces.parquet``, so that a dry
    run of a big run holds one chunk of rendered requests, not all of them."""

    def requests() -> Iterator[LLMRequest]:
        for part in pieces:
            reqs, _ = build_requests(part.column("text").to_pylist(),
                                     part.column("kind").to_pylist(), prompt, cfg)
            yield from reqs

    return engine.dry_run(requests())



def adopt_old_split(run: RunDir) -> None:
    """A run made before ``read`` and ``split`` were two stages holds only ``pieces.parquet``
    (cut to its ``--max-chars`` if it had one): take those pieces as what was read, so a
    rerun without inputs works and, with the same settings, redoes nothing."""
    old = run.stage("split")
    if run.stage("read") is not None or old is None or UNCUT in old.outputs:
        return
    if not run.file("pieces.parquet").exists() or run.file(UNCUT).exists():
        return
    shutil.copyfile(run.file("pieces.parquet"), run.file(UNCUT))
    h = run.artefact_hash(UNCUT, fresh=True)
    run.record("read", StageRecord(fingerprint("read", ReadStage.version, {UNCUT: h}), [UNCUT],
                                   fingerprint({UNCUT: h}), old.counts, old.seconds))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the run (or saved dictionary) at ``path``; a clear error if none."""
    return RunDir(check_run_dir(path, marks=(MANIFEST,))).manifest


DEFAULT = "<default>"  # a flag value that puts a setting back to its default (--clusters auto)
PER_INVOCATION = ("max_cost",)  # a cap on one invocation's spend: never carried over from the manifest


# Settings that name something of the run's LLM backend: a command switching to another
# backend (``--llm local`` on a run made with ``--llm openai --model gpt-4.1-mini``) does not
# carry them over, or the local backend would look for a model file called gpt-4.1-mini.
BACKEND_SETTINGS = ("model", "base_url")


def _recorded_backend(stored: Mapping[str, object]) -> str | None:
    """The backend a run's config names: its ``llm``, else ``openai`` when it has a server
    URL (as :func:`featdisco.llm.registry.resolve_backend` decides); None when unknown."""
    llm = stored.get("llm")
    if isinstance(llm, str) and llm.strip():
        return llm.strip().lower()
    return "openai" if stored.get("base_url") else None


def config_from_manifest(path: str | Path, overrides: Mapping[str, object] | None = None, *,
                         fitted_prompts: bool = True, required: bool = True,
                         own_prompts: bool = False) -> PipelineConfig:
    """The one place config precedence is decided, for every command: a flag (a value in
    ``overrides`` that is not None; :data:`DEFAULT` puts the default back) beats the
    manifest (the config the run was made with), which beats the default. Settings in
    :data:`PER_INVOCATION` are not carried over, nor :data:`BACKEND_SETTINGS` when ``llm``
    names another backend than the run's. Prompts: with ``own_prompts`` (``run``)
    the run's copies of the prompt files a user gave it, then ``overrides["prompt_files"]``;
    with ``fitted_prompts`` (``transform``, ``load``) the run's copies of all its prompts;
    otherwise the packaged ones (analyses' own prompts). ``required=False``: a folder
    without a manifest gives the defaults."""
    path = Path(path)
    manifest = read_manifest(path) if required or (path / MANIFEST).exists() else {}
    known = {f.name for f in fields(PipelineConfig)} - set(PER_INVOCATION)
    stored = manifest.get("config") or {}
    cfg = {k: v for k, v in stored.items() if k in known}
    if manifest.get("config"):
        cfg.setdefault("evidence", False)  # a run from before evidence featurized without quotes
        cfg["embedder"] = recorded_embedder(stored)  # a run that recorded none used the old default
    fitted_evidence = cfg.get("evidence", True)
    if cfg.get("budget") is None and isinstance(manifest.get("budget_usd"), int | float):
        cfg["budget"] = manifest["budget_usd"]  # the run's budget carries over (transform)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    given_prompts = flags.pop("prompt_files", None)
    flag_prompts = dict(given_prompts) if isinstance(given_prompts, Mapping) else {}
    flag_llm, was = flags.get("llm"), _recorded_backend(stored)
    if isinstance(flag_llm, str) and flag_llm != DEFAULT and was is not None and flag_llm.lower() != was:
        for k in BACKEND_SETTINGS:  # the run's model name or server means nothing to another backend
            cfg.pop(k, None)
    for k, v in flags.items():
        if v == DEFAULT:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    versions = manifest.get("prompts") or {}
    if own_prompts:
        given = set(stored.get("prompt_files") or {})
        cfg["prompt_files"] = {**saved_prompt_files(path, {n: v for n, v in versions.items() if n in given}),
                               **flag_prompts}
    else:
        cfg["prompt_files"] = saved_prompt_files(path, versions) if fitted_prompts else {}
    if cfg.get("evidence", True) != fitted_evidence and Path(
            cfg["prompt_files"].get("featurize", "x")).name.startswith("featurize.v"):
        del cfg["prompt_files"]["featurize"]  # the packaged prompt of the other setting
    return PipelineConfig(**cfg)


def _jsonable(d: Mapping[str, object]) -> dict[str, object]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
