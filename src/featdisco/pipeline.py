"""The discovery run: split → featurize → embed → cluster → name → rate, in a run directory.

Each stage reads the artefacts before it and writes its own; its fingerprint (config, prompt
version, content hashes of its inputs) decides whether a rerun may skip it. This module only
wires stages together; what each stage does lives in :mod:`featdisco.stages`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import DRY_RUN_BATCH, CallEngine, RunSummary
from featdisco.prompts import Prompt, load_prompt
from featdisco.run import (
    EMBED_CACHE,
    LLM_CACHE,
    MANIFEST,
    RunDir,
    RunLock,
    StageRecord,
    fingerprint,
    reset_peak_rss,
    table_hash,
)
from featdisco.stages import cluster as cluster_stage
from featdisco.stages import embed as embed_stage
from featdisco.stages import featurize as featurize_stage
from featdisco.stages import name as name_stage
from featdisco.stages import rate as rate_stage
from featdisco.stages.cluster import auto_n_clusters, cluster_features, string_ids
from featdisco.stages.embed import EmbeddingCache, NpyWriter, save_matrix
from featdisco.stages.featurize import (
    FEATURES_SCHEMA,
    FeaturizeConfig,
    FeaturizeReport,
    build_requests,
    featurize_chunks,
)
from featdisco.stages.name import name_clusters
from featdisco.stages.rate import rate_clusters
from featdisco.transcripts.model import PIECE_KINDS, Transcript
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, piece_batches, piece_schema

STAGES = ("split", "featurize", "embed", "cluster", "name", "rate")
PROMPTS = ("featurize", "name", "rate")


@dataclass(slots=True)
class PipelineConfig:
    """Everything that shapes a run's results. Which fields feed which stage's fingerprint
    is spelled out in :func:`run_pipeline`, so changing one reruns only what depends on it."""

    llm: str | None = None
    model: str | None = None
    base_url: str | None = None
    embedder: str | None = None
    n_clusters: int | dict[str, int] | None = None
    min_features: int = 10
    max_features: int = 20
    max_piece_tokens: int = 2000
    max_chars: int | None = None
    sample_size: int = 100
    rate_batch: int = 10
    min_cluster_size: int = 3
    seed: int = 0
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_cost: float | None = None
    prompt_files: dict[str, str] = field(default_factory=dict)
    # How calls are made, not what they return: none of these enter a fingerprint.
    batch: bool = False  # provider batch APIs (half price, up to 24 h)
    batch_poll: float = 30.0  # seconds between batch polls
    executor: str = "local"  # 'local' (asyncio) or 'ray' (Ray Data)

    def k_for(self, kind: str, n_distinct: int) -> int:
        k = self.n_clusters.get(kind) if isinstance(self.n_clusters, dict) else self.n_clusters
        if k is None:
            return max(1, min(auto_n_clusters(n_distinct), n_distinct))
        if k > n_distinct:
            raise FeatdiscoError(f"--clusters {k} is more than the {n_distinct} distinct {kind} "
                                 "features; lower it or leave it unset for the automatic rule")
        return k

    def featurize_config(self) -> FeaturizeConfig:
        return FeaturizeConfig(self.min_features, self.max_features, self.max_piece_tokens)


@dataclass(slots=True)
class StageTiming:
    name: str
    seconds: float
    skipped: bool
    counts: dict[str, Any]


@dataclass(slots=True)
class RunResult:
    run_dir: Path
    clusters: pa.Table
    stages: list[StageTiming]
    llm: RunSummary
    complete: bool
    stopped_reason: str | None = None


Log = Callable[[str], None]


class Pipeline:
    """Holds the backends for one run; :meth:`run` executes or skips each stage."""

    def __init__(self, run_dir: str | Path, config: PipelineConfig, *, llm: Any = None,
                 embedder: Any = None, log: Log | None = None, progress: str = "auto",
                 llm_cache: str | Path | None = None) -> None:
        self.dir = RunDir(run_dir)
        self._lock = RunLock(self.dir.path)  # taken by whatever writes: run, transform, dry run
        # ``transform`` shares the fitted run's cache, so a piece seen at fit time is free.
        self.llm_cache_path = Path(llm_cache) if llm_cache else self.dir.file(LLM_CACHE)
        self.cfg = config
        self.log: Log = log or (lambda _m: None)
        self.prompts: dict[str, Prompt] = {n: load_prompt(n, config.prompt_files.get(n)) for n in PROMPTS}
        self._llm = llm
        self._embedder = embedder
        self._own_embedder = embedder is None
        self._engine: CallEngine | None = None
        self._executor: Any = None
        self._progress = progress
        self.timings: list[StageTiming] = []

    # ------------------------------------------------------------ backends (lazy)

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from featdisco.llm.registry import make_llm

            self._llm = make_llm(self.cfg.llm, self.cfg.model, self.cfg.base_url,
                                 concurrency=self.cfg.concurrency)
        return self._llm

    @property
    def engine(self) -> CallEngine:
        if self._engine is None:
            options: dict[str, Any] = dict(
                concurrency=self.cfg.concurrency, rpm=self.cfg.rpm, tpm=self.cfg.tpm,
                timeout=self.cfg.timeout, max_cost=self.cfg.max_cost, progress=self._progress,
                seed=self.cfg.seed)
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

    def llm_id(self) -> dict[str, str]:
        return {"backend": self.llm.name, "model": self.llm.model}

    def lock(self) -> None:
        """Take the run directory for this process (:class:`~featdisco.run.RunLock`); a
        second process gets a clear error instead of paying for the same calls again."""
        self._lock.acquire()

    def close(self) -> None:
        if self._engine is not None and self._engine.cache is not None:
            self._engine.cache.close()
        self._lock.release()

    # ------------------------------------------------------------ stages

    def split(self, inputs: Iterable[str | Path] | None, read_options: ReadOptions | None,
              transcripts: Iterable[Transcript] | None = None) -> str:
        t0 = _begin()
        if inputs is None and transcripts is None:
            rec = self.dir.stage("split")
            if rec is None or not self.dir.file("pieces.parquet").exists():
                raise FeatdiscoError(f"{self.dir.path} has no pieces yet: give transcript files to read")
            self._timing("split", t0, True, rec.counts)
            return rec.output_hash
        report, stats = ReadReport(), SplitStats()
        # Streamed to disk a batch at a time and hashed on the way: the pieces of a big run
        # (all their text) never sit in memory together.
        _, out_hash = self.dir.write_stream(
            "pieces.parquet", piece_schema(),
            self._piece_batches(inputs, read_options, transcripts, report, stats),
            ["piece_id", "kind", "text"],
            empty_error="no pieces to work on: the input holds no user, thought or response text")
        counts = {"transcripts": stats.transcripts, **{k: v for k, v in stats.by_kind().items()},
                  "skipped_records": sum(report.bad.values())}
        self.dir.record("split", StageRecord(fingerprint(out_hash), ["pieces.parquet"], out_hash, counts,
                                             time.perf_counter() - t0))
        self._timing("split", t0, False, counts)
        return out_hash

    def _piece_batches(self, inputs: Iterable[str | Path] | None, read_options: ReadOptions | None,
                       transcripts: Iterable[Transcript] | None, report: ReadReport,
                       stats: SplitStats | None = None,
                       batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
        if transcripts is None:
            assert inputs is not None
            transcripts = read_transcripts(list(inputs), read_options or ReadOptions(),
                                           report=report, log=self.log)
        return piece_batches(iter_pieces(transcripts, max_chars=self.cfg.max_chars, stats=stats),
                             batch_rows=batch_rows)

    def estimate(self, inputs: Iterable[str | Path] | None = None,
                 read_options: ReadOptions | None = None) -> Any:
        """Calls, tokens and cost of featurizing ``inputs`` — or, with none, the pieces this
        run already split — without sending anything or writing to the run directory: a
        dry run against a finished run must leave it as it was."""
        fcfg, prompt = self.cfg.featurize_config(), self.prompts["featurize"]
        if inputs is not None:
            batches = self._piece_batches(inputs, read_options, None, ReadReport(),
                                          batch_rows=DRY_RUN_BATCH)
            return dry_run(batches, self.engine, prompt, fcfg)
        path = self.dir.file("pieces.parquet")
        if not path.exists():
            raise FeatdiscoError(f"{self.dir.path} has no pieces yet: give transcript files to read")
        with pq.ParquetFile(path) as pf:
            return dry_run(pf.iter_batches(batch_size=DRY_RUN_BATCH, columns=["kind", "text"]),
                           self.engine, prompt, fcfg)

    def featurize(self, pieces_hash: str) -> tuple[str, bool]:
        prompt = self.prompts["featurize"]
        fcfg = self.cfg.featurize_config()
        fp = fingerprint("featurize", featurize_stage.STAGE_VERSION, pieces_hash, self.llm_id(),
                         prompt.version, asdict(fcfg))
        t0 = _begin()
        if (rec := self.dir.is_current("featurize", fp)) is not None:
            self._timing("featurize", t0, True, rec.counts)
            return rec.output_hash, True
        # Pieces are read a chunk at a time and features written as each chunk finishes:
        # neither all the pieces' text nor all the features are held at once.
        before = _snapshot(self.engine)
        with pq.ParquetFile(self.dir.file("pieces.parquet")) as pieces:
            n = pieces.metadata.num_rows
            report = FeaturizeReport(pieces=n)
            chunks = pieces.iter_batches(batch_size=featurize_stage.CHUNK_PIECES,
                                         columns=["piece_id", "transcript_id", "kind", "text"])
            _, out_hash = self.dir.write_stream(
                "features.parquet", FEATURES_SCHEMA,
                featurize_chunks(chunks, self.engine, prompt, fcfg, report,
                                 n_chunks=-(-n // featurize_stage.CHUNK_PIECES)),
                ["feature_id", "kind", "text"])
        complete = report.failed == 0 and report.not_sent == 0
        self.dir.record("featurize", StageRecord(fp, ["features.parquet"], out_hash, report.as_dict(),
                                                 time.perf_counter() - t0, _delta(self.engine, before),
                                                 complete=complete))
        self._timing("featurize", t0, False, report.as_dict())
        if report.failed:
            self.log(f"featurize: {report.failed} of {report.pieces} pieces failed "
                     f"({dict(report.failed_by_reason)}); a rerun retries them")
        if report.truncated:
            self.log(f"featurize: {report.truncated} pieces were longer than "
                     f"{fcfg.max_piece_tokens} tokens and were truncated")
        return out_hash, complete

    def embed(self, features_hash: str) -> str:
        fp = fingerprint("embed", embed_stage.STAGE_VERSION, features_hash, self.embedder.name)
        t0 = _begin()
        if (rec := self.dir.is_current("embed", fp)) is not None:
            self._timing("embed", t0, True, rec.counts)
            return rec.output_hash
        features = self.dir.read_table("features.parquet", columns=["text"])
        strings = pc.unique(features.column("text")).to_pylist() if features.num_rows else []
        strings.sort()
        n_features = features.num_rows
        del features  # the matrix may be large; hold no more than the strings meanwhile
        dim = int(self.embedder.dim)
        cache = EmbeddingCache(self.dir.file(EMBED_CACHE))
        writer = NpyWriter(self.dir.file("embeddings.npy"), len(strings), dim)
        try:
            self.executor.embed(strings, self.embedder, cache, self.cfg, writer)
            writer.commit()
        finally:
            writer.abort()  # no-op after commit
            cache.close()
        shape = (len(strings), dim)
        table = pa.table({"string_id": pa.array(range(len(strings)), pa.int64()),
                          "text": pa.array(strings, pa.string())})
        self.dir.write_table("strings.parquet", table)
        out_hash = fingerprint(features_hash, self.embedder.name, shape)
        counts = {"features": n_features, "distinct_strings": len(strings), "dim": dim}
        self.dir.record("embed", StageRecord(fp, ["embeddings.npy", "strings.parquet"], out_hash, counts,
                                             time.perf_counter() - t0))
        self._timing("embed", t0, False, counts)
        return out_hash

    def cluster(self, features_hash: str, embed_hash: str) -> str:
        kcfg = self.cfg.n_clusters
        fp = fingerprint("cluster", cluster_stage.STAGE_VERSION, features_hash, embed_hash, kcfg,
                         self.cfg.seed, self.cfg.min_cluster_size)
        t0 = _begin()
        if (rec := self.dir.is_current("cluster", fp)) is not None:
            self._timing("cluster", t0, True, rec.counts)
            return rec.output_hash
        # Feature texts are matched to their strings a block at a time and not kept: the
        # text column is the bulk of a big run's features table.
        strings = self.dir.read_table("strings.parquet").column("text")
        path = self.dir.file("features.parquet")
        with pq.ParquetFile(path) as pf:
            sids = string_ids((b.column(0) for b in pf.iter_batches(
                batch_size=1 << 20, columns=["text"])), pf.metadata.num_rows, strings)
        result = cluster_features(
            self.dir.read_table("features.parquet",
                                ["feature_id", "piece_id", "transcript_id", "kind"]),
            strings, self.dir.file("embeddings.npy"), self.cfg.k_for, kinds=PIECE_KINDS,
            seed=self.cfg.seed, min_cluster_size=self.cfg.min_cluster_size, sids=sids)
        outputs = ["assignments.parquet", "clusters_base.parquet"]
        for kind, centers in result.centroids.items():
            save_matrix(self.dir.file(f"centroids_{kind}.npy"), centers)
            outputs.append(f"centroids_{kind}.npy")
        assignments, counts = result.assignments, result.counts
        self.dir.write_table("assignments.parquet", assignments)
        self.dir.write_table("clusters_base.parquet", result.clusters)
        out_hash = table_hash(assignments, ["feature_id", "cluster_id"])
        self.dir.record("cluster", StageRecord(fp, outputs, out_hash, counts, time.perf_counter() - t0))
        self._timing("cluster", t0, False, counts)
        return out_hash

    def _members(self) -> tuple[pa.Table, ClusterMembers]:
        base = self.dir.read_table("clusters_base.parquet")
        return base, ClusterMembers(self.dir.read_table("features.parquet", ["text"]).column("text"),
                                    self.dir.read_table("assignments.parquet", ["cluster_id"]).column("cluster_id"),
                                    base.num_rows)

    def name(self, assign_hash: str) -> tuple[str, bool]:
        prompt = self.prompts["name"]
        fp = fingerprint("name", name_stage.STAGE_VERSION, assign_hash, self.llm_id(),
                         prompt.version, self.cfg.sample_size, self.cfg.seed)
        t0 = _begin()
        if (rec := self.dir.is_current("name", fp)) is not None:
            self._timing("name", t0, True, rec.counts)
            return rec.output_hash, True
        base, members = self._members()
        before = _snapshot(self.engine)
        table, report = name_clusters(base.column("cluster_id").to_pylist(), base.column("kind").to_pylist(),
                                      members, self.engine, prompt, sample_size=self.cfg.sample_size,
                                      seed=self.cfg.seed)
        self.dir.write_table("labels.parquet", table)
        out_hash = table_hash(table, ["cluster_id", "label", "description"])
        counts = {"clusters": report.clusters, "ok": report.ok, "failed": report.failed}
        self.dir.record("name", StageRecord(fp, ["labels.parquet"], out_hash, counts, time.perf_counter() - t0,
                                            _delta(self.engine, before), complete=report.failed == 0))
        self._timing("name", t0, False, counts)
        return out_hash, report.failed == 0

    def rate(self, assign_hash: str, labels_hash: str) -> tuple[str, bool]:
        prompt = self.prompts["rate"]
        fp = fingerprint("rate", rate_stage.STAGE_VERSION, assign_hash, labels_hash,
                         self.llm_id(), prompt.version, self.cfg.rate_batch, self.cfg.seed)
        t0 = _begin()
        if (rec := self.dir.is_current("rate", fp)) is not None:
            self._timing("rate", t0, True, rec.counts)
            return rec.output_hash, True
        base, members = self._members()
        labels = self.dir.read_table("labels.parquet").column("label").to_pylist()
        examples = [members.most_common(i, 5) for i in range(len(members))]
        before = _snapshot(self.engine)
        table, report = rate_clusters(base.column("cluster_id").to_pylist(), base.column("kind").to_pylist(),
                                      labels, examples, self.engine, prompt,
                                      batch_size=self.cfg.rate_batch, seed=self.cfg.seed)
        self.dir.write_table("ratings.parquet", table)
        out_hash = table_hash(table, ["cluster_id", "interest", "private"])
        counts = {"clusters": report.clusters, "batches": report.batches, "rated": report.rated,
                  "failed": report.failed, "private": report.private}
        self.dir.record("rate", StageRecord(fp, ["ratings.parquet"], out_hash, counts, time.perf_counter() - t0,
                                            _delta(self.engine, before), complete=report.failed == 0))
        self._timing("rate", t0, False, counts)
        return out_hash, report.failed == 0

    def assemble(self) -> pa.Table:
        """The cluster table a researcher reads: base counts, label, rating, flags."""
        base = self.dir.read_table("clusters_base.parquet")
        labels = self.dir.read_table("labels.parquet")
        ratings = self.dir.read_table("ratings.parquet")
        _, members = self._members()
        table = base.append_column("label", labels.column("label")) \
            .append_column("description", labels.column("description")) \
            .append_column("interest", ratings.column("interest")) \
            .append_column("interest_reason", ratings.column("reason")) \
            .append_column("private", ratings.column("private")) \
            .append_column("examples", pa.array([members.most_common(i, 10) for i in range(len(members))],
                                                pa.list_(pa.string())))
        self.dir.write_table("clusters.parquet", table)
        return table

    def _timing(self, name: str, t0: float, skipped: bool, counts: dict[str, Any]) -> None:
        self.timings.append(StageTiming(name, time.perf_counter() - t0, skipped, counts))
        self.log(f"{name}: {'up to date, skipped' if skipped else 'done'} "
                 f"({time.perf_counter() - t0:.1f}s)")

    def _unmake(self) -> None:
        """Remove what starting a run wrote in a new directory (nothing else was there)."""
        self._lock.release()
        for name in (MANIFEST, ".lock"):
            self.dir.file(name).unlink(missing_ok=True)
        for prompt in self.prompts.values():
            (self.dir.file("prompts") / prompt.file).unlink(missing_ok=True)
        for folder in (self.dir.file("prompts"), self.dir.path):
            with contextlib.suppress(OSError):  # not empty: something else is there; keep it
                folder.rmdir()

    def save_prompts(self) -> None:
        """Keep the exact prompt texts with the run, so ``transform`` featurizes new data
        the way the dictionary was fitted even after the package's prompts change."""
        folder = self.dir.file("prompts")
        folder.mkdir(exist_ok=True)
        for p in folder.glob("*.txt"):
            p.unlink()
        for prompt in self.prompts.values():
            (folder / prompt.file).write_text(prompt.text, encoding="utf-8")

    def run(self, inputs: Iterable[str | Path] | None = None, read_options: ReadOptions | None = None,
            transcripts: Iterable[Transcript] | None = None) -> RunResult:
        self.lock()
        fresh = not self.dir.exists
        self.dir.update(config=_jsonable(asdict(self.cfg)),
                        prompts={n: p.version for n, p in self.prompts.items()})
        self.save_prompts()
        try:
            try:
                pieces_hash = self.split(inputs, read_options, transcripts)
            except FeatdiscoError:
                if fresh:  # bad or missing input on a first run: leave no half-made run
                    self._unmake()
                raise
            features_hash, feat_ok = self.featurize(pieces_hash)
            if self._stopped_at_cap():
                return self._result(False, "stopped at the --max-cost cap during featurize; "
                                    "rerun with a higher cap to continue (finished calls are cached)")
            if pq.read_metadata(self.dir.file("features.parquet")).num_rows == 0:
                raise FeatdiscoError("the autorater produced no features (every call failed?); "
                                     "see the featurize counts above")
            embed_hash = self.embed(features_hash)
            if self._own_embedder:  # its model and buffers are not needed after embed
                self._embedder = None
            assign_hash = self.cluster(features_hash, embed_hash)
            labels_hash, name_ok = self.name(assign_hash)
            _, rate_ok = self.rate(assign_hash, labels_hash)
            stopped = "stopped at the --max-cost cap" if self._stopped_at_cap() else None
            self.assemble()
            return self._result(feat_ok and name_ok and rate_ok and stopped is None, stopped)
        finally:
            if self._engine is not None:  # a rerun that called nothing keeps the last totals
                self.dir.update(llm_totals=self._engine.summary.as_dict())
            self.close()

    def _stopped_at_cap(self) -> bool:
        return self._engine is not None and self._engine.summary.skipped_budget > 0

    def _result(self, complete: bool, reason: str | None) -> RunResult:
        clusters_path = self.dir.file("clusters.parquet")
        clusters = self.dir.read_table("clusters.parquet") if clusters_path.exists() else pa.table({})
        summary = self._engine.summary if self._engine else RunSummary()
        return RunResult(self.dir.path, clusters, self.timings, summary, complete, reason)


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


def _begin() -> float:
    """A stage's start: its clock, and a fresh peak-memory window for its record."""
    reset_peak_rss()
    return time.perf_counter()


def _snapshot(engine: CallEngine) -> dict[str, Any]:
    return engine.summary.as_dict()


def _delta(engine: CallEngine, before: dict[str, Any]) -> dict[str, Any]:
    after = engine.summary.as_dict()
    out: dict[str, Any] = {}
    for k, v in after.items():
        b = before.get(k)
        if isinstance(v, int | float) and isinstance(b, int | float):
            out[k] = v - b
        else:
            out[k] = v
    return out


class ClusterMembers(Sequence[list[str]]):
    """Each cluster's distinct member texts (sorted) and how often each occurs, held in Arrow
    and turned into Python strings one cluster at a time.

    Naming samples distinct members and the examples are the most frequent ones, so the
    (cluster, text, count) triples are all they need; at 100k transcripts that is a few
    hundred MB of Arrow instead of ~4M Python strings in per-cluster lists.
    """

    def __init__(self, texts: pa.ChunkedArray, cluster_ids: pa.ChunkedArray, n_clusters: int) -> None:
        grouped = (pa.table({"cluster_id": cluster_ids, "text": texts})
                   .group_by(["cluster_id", "text"]).aggregate([([], "count_all")])
                   .sort_by([("cluster_id", "ascending"), ("text", "ascending")]))
        self._texts = grouped.column("text").combine_chunks()
        self._counts = grouped.column("count_all").to_numpy()
        cids = grouped.column("cluster_id").to_numpy()
        self._bounds = np.searchsorted(cids, np.arange(n_clusters + 1))

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, i: int) -> list[str]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[str]]: ...

    def __getitem__(self, i: int | slice) -> list[str] | list[list[str]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a, b = int(self._bounds[i]), int(self._bounds[i + 1])
        return self._texts.slice(a, b - a).to_pylist()

    def most_common(self, i: int, n: int) -> list[str]:
        """The ``n`` most frequent members of cluster ``i``, ties broken alphabetically."""
        a, b = int(self._bounds[i]), int(self._bounds[i + 1])
        top = np.argsort(-self._counts[a:b], kind="stable")[:n]  # texts are sorted: stable keeps ties in order
        texts = self._texts.slice(a, b - a)
        return [texts[int(j)].as_py() for j in top]


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
