"""``FeatureDiscovery``: the method as a scikit-learn estimator for notebooks.

Parameters are stored by ``__init__`` exactly as given (so ``clone``, ``get_params`` and
``set_params`` work) and checked by ``fit``; fitted state ends in ``_`` and only ``fit`` (or
``load``) sets it. ``fit`` runs the pipeline into ``run_dir`` (or a temporary folder it
removes, keeping the dictionary in memory). ``transform`` featurizes new transcripts, sends
each feature to its nearest fitted centroid (the rule the cluster stage itself assigns by)
and returns one row per input transcript, one column per cluster; ``transform_pieces``
keeps the per-piece detail and ``find_new`` names what the dictionary lacks. The input is
text (files or transcripts), not a numeric array: see ``__sklearn_tags__``.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import Tags

from featdisco.analysis.activations import Activations, load_activations
from featdisco.analysis.provenance import dictionary_edition, is_current_edition
from featdisco.dictionary import Dictionary, group_unassigned
from featdisco.embedders.base import Embedder
from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMBackend
from featdisco.pipeline import ENCODE, Pipeline, PipelineConfig, config_from_manifest, read_manifest
from featdisco.prompts import PROMPT_NAMES, Prompt, saved_copy
from featdisco.rundir import LLM_CACHE, MANIFEST, RunDir
from featdisco.storage.matrix import load_matrix
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadOptions, read_transcripts

Source = str | Path | Iterable[str | Path] | Iterable[Transcript]


def _split_source(source: Source) -> tuple[list[str | Path] | None, Iterable[Transcript] | None]:
    """Paths, or transcripts (streamed: a generator of them is not held in memory)."""
    if isinstance(source, str | Path):
        return [source], None
    items: Iterator[Any] = iter(source)
    first = next(items, None)
    if isinstance(first, Transcript):
        return None, itertools.chain([first], items)
    return ([] if first is None else [first]) + list(items), None


def _in_order(X: Source, read_options: ReadOptions | None) -> tuple[list[str], Iterator[Transcript]]:
    """The transcripts of ``X`` as they stream to the split stage, and the list their ids
    are appended to as they pass: the rows of a per-transcript matrix, in input order,
    including transcripts with no text to split (they get an empty row)."""
    paths, transcripts = _split_source(X)
    source = transcripts if transcripts is not None else read_transcripts(paths or [], read_options)
    ids: list[str] = []

    def passing() -> Iterator[Transcript]:
        for t in source:
            ids.append(t.id)
            yield t

    return ids, passing()


def _per_transcript(act: Activations, transcript_ids: list[str]) -> sparse.csr_matrix:
    """Transcripts × clusters, one row per id of ``transcript_ids`` (in that order): a
    transcript activates a cluster when any of its features is assigned to it."""
    tm = act.transcript_matrix
    row_of = {t: i for i, t in enumerate(act.transcript_ids)}
    rows = np.asarray([row_of.get(t, tm.shape[0]) for t in transcript_ids], dtype=np.int64)
    padded = sparse.vstack([tm, sparse.csr_matrix((1, tm.shape[1]), dtype=tm.dtype)], format="csr")
    return sparse.csr_matrix(padded[rows])


class _Backends(TypedDict):
    """The backend objects a FeatureDiscovery was given (None: made from their names)."""

    llm: LLMBackend | None
    embedder: Embedder | None


class FeatureDiscovery(TransformerMixin, BaseEstimator):
    """Discover a dictionary of behaviours from transcripts.

    ``llm`` is a backend name (``openai``, ``anthropic``, ``local``) or an object following
    :class:`featdisco.llm.base.LLMBackend`; ``embedder`` a name (``minilm-q8``, the default; ``minilm``, ``static``, ``st:PATH``,
    ``api:MODEL``) or an :class:`featdisco.embedders.base.Embedder`; ``prompts`` maps a
    prompt name (``featurize``, ``name``, ``merge``, ``rate``) to a file of the user's. The rest are
    :class:`featdisco.pipeline.PipelineConfig` fields.

    ``X`` is a path, a list of paths, or a list of
    :class:`~featdisco.transcripts.model.Transcript`; a sample is one transcript (a file may
    hold many).
    """

    def __init__(self, *, llm: Any = None, model: str | None = None, base_url: str | None = None,
                 embedder: Any = None, n_clusters: int | dict[str, int] | None = None,
                 min_features: int = 10, max_features: int = 20, max_piece_tokens: int = 2000,
                 evidence: bool = True, max_chars: int | None = None, sample_size: int = 100,
                 name_contrast: int = 0, rate_batch: int = 10,
                 min_cluster_size: int = 3, merge: bool = True, seed: int = 0, concurrency: int = 64,
                 rpm: float | None = None, tpm: float | None = None, timeout: float = 120.0,
                 max_cost: float | None = None, prompts: dict[str, str | Path] | None = None,
                 batch: bool = False, executor: str = "local",
                 run_dir: str | Path | None = None) -> None:
        self.llm = llm
        self.model = model
        self.base_url = base_url
        self.embedder = embedder
        self.n_clusters = n_clusters
        self.min_features = min_features
        self.max_features = max_features
        self.max_piece_tokens = max_piece_tokens
        self.evidence = evidence
        self.max_chars = max_chars
        self.sample_size = sample_size
        self.name_contrast = name_contrast
        self.rate_batch = rate_batch
        self.min_cluster_size = min_cluster_size
        self.merge = merge
        self.seed = seed
        self.concurrency = concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.timeout = timeout
        self.max_cost = max_cost
        self.prompts = prompts
        self.batch = batch
        self.executor = executor
        self.run_dir = run_dir

    # ------------------------------------------------------------ helpers

    def _config(self) -> PipelineConfig:
        """The parameters as a pipeline config, validated (scikit-learn: in ``fit``)."""
        params = self.get_params(deep=False)
        if not isinstance(params["llm"], str | None) and not hasattr(params["llm"], "complete"):
            raise FeatdiscoError(f"llm must be a backend name or an LLM backend object, not {params['llm']!r}")
        unknown = set(params["prompts"] or {}) - set(PROMPT_NAMES)
        if unknown:
            raise FeatdiscoError(f"prompts: unknown prompt name(s) {', '.join(sorted(unknown))}; "
                                 f"use {', '.join(PROMPT_NAMES)}")
        cfg = PipelineConfig(
            llm=params.pop("llm") if isinstance(self.llm, str) else None,
            embedder=params.pop("embedder") if isinstance(self.embedder, str) else None,
            prompt_files={k: str(v) for k, v in (params.pop("prompts") or {}).items()},
            **{k: v for k, v in params.items() if k not in ("llm", "embedder", "prompts", "run_dir")})
        FeatureDiscovery._check_numbers(cfg)
        return cfg

    @staticmethod
    def _check_numbers(cfg: PipelineConfig) -> None:
        for name in ("min_features", "max_features", "sample_size", "rate_batch", "concurrency"):
            value = getattr(cfg, name)
            least = 0 if name == "rate_batch" else 1  # rate_batch=0: no interest ratings
            if not isinstance(value, int) or value < least:
                raise FeatdiscoError(f"{name} must be an integer of at least {least}, not {value!r}")
        if cfg.min_features > cfg.max_features:
            raise FeatdiscoError(f"min_features ({cfg.min_features}) is more than max_features "
                                 f"({cfg.max_features})")

    def _backends(self) -> _Backends:
        return {"llm": None if isinstance(self.llm, str | None) else self.llm,
                "embedder": None if isinstance(self.embedder, str | None) else self.embedder}

    def _check_fitted(self) -> None:
        if not hasattr(self, "dictionary_"):
            raise NotFittedError("this FeatureDiscovery is not fitted: call fit() or load() first")

    # ------------------------------------------------------------ API

    def __sklearn_tags__(self) -> Tags:
        """Text in (files or transcripts, not a 2-D array), no target, a sparse matrix out;
        an LLM labels the features, so a refit need not give the same dictionary."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.target_tags.required = False
        tags.non_deterministic = True
        tags.requires_fit = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []  # text in, 0/1 activations out
        return tags

    def fit(self, X: Source, y: None = None, *, read_options: ReadOptions | None = None) -> FeatureDiscovery:
        """Run the whole pipeline on ``X`` (paths or transcripts)."""
        self._fit(X, read_options, keep_activations=False)
        return self

    def fit_transform(self, X: Source, y: None = None, *,
                      read_options: ReadOptions | None = None) -> sparse.csr_matrix:
        """Fit, then what ``transform(X)`` gives, read from the fit's own pieces (no extra
        calls): one row per transcript of ``X``, one column per cluster."""
        ids, transcripts = _in_order(X, read_options)
        act = self._fit(transcripts, read_options, keep_activations=True)  # its --meta columns
        assert act is not None
        return _per_transcript(act, ids)

    def _fit(self, X: Source, read_options: ReadOptions | None, keep_activations: bool) -> Activations | None:
        cfg = self._config()
        temporary = self.run_dir is None
        run_dir = Path(tempfile.mkdtemp(prefix="featdisco-run-")) if temporary else Path(str(self.run_dir))
        try:
            pipe = Pipeline(run_dir, cfg, **self._backends())
            inputs, transcripts = _split_source(X)
            result = pipe.run(inputs, read_options, transcripts)
            if not result.complete:
                raise FeatdiscoError(f"the run in {run_dir} did not complete"
                                     f"{': ' + result.stopped_reason if result.stopped_reason else ''}; "
                                     "fit() again to resume" + (" (pass run_dir= to keep it)" if temporary else ""))
            self.dictionary_ = Dictionary.load(run_dir)
            self.prompts_ = dict(pipe.prompts)
            self.config_ = cfg
            self.manifest_ = read_manifest(run_dir)
            self.run_dir_ = None if temporary else run_dir
            act = _activations(run_dir, self.dictionary_) if keep_activations else None
        finally:
            if temporary:
                shutil.rmtree(run_dir, ignore_errors=True)
        return act

    @property
    def clusters_(self) -> pa.Table:
        self._check_fitted()
        return self.dictionary_.clusters

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The label of each column of the activation matrix: column ``i`` is cluster id
        ``i`` (ids are stable, so a merged or split cluster's old id is a retired, empty column)."""
        self._check_fitted()
        kinds = self.dictionary_.clusters.column("kind").to_pylist()
        ids = self.dictionary_.clusters.column("cluster_id").to_pylist()
        labels = self.dictionary_.clusters.column("label").to_pylist()
        out = np.asarray([f"retired cluster {i}" for i in range(self.dictionary_.id_bound)], dtype=object)
        for lab, k, i in zip(labels, kinds, ids, strict=True):
            out[i] = lab or f"{k} cluster {i}"
        return out

    def transform(self, X: Source, *, read_options: ReadOptions | None = None) -> sparse.csr_matrix:
        """Which clusters each transcript of ``X`` activates: a sparse 0/1 matrix, one row per
        input transcript (in input order; one with no text to split has an empty row), one
        column per cluster (named by :meth:`get_feature_names_out`). Featurizes the new
        transcripts (through the fitted run's LLM cache when the estimator has a run folder)
        and assigns each feature to its nearest fitted centroid; the estimator is not changed."""
        self._check_fitted()
        ids, transcripts = _in_order(X, read_options)
        return _per_transcript(self._apply(transcripts, None, read_options, name_new=False), ids)

    def transform_pieces(self, X: Source, *, out_dir: str | Path | None = None,
                         read_options: ReadOptions | None = None) -> Activations:
        """The per-piece detail of :meth:`transform`: pieces × clusters and transcripts ×
        clusters with their row tables and each feature's cluster. ``out_dir`` keeps the new
        pieces, features and assignments (a folder ``featdisco report`` can show); without it
        they go to a temporary folder that is removed."""
        self._check_fitted()
        return self._apply(X, out_dir, read_options, name_new=False)

    def find_new(self, X: Source, *, out_dir: str | Path | None = None,
                 read_options: ReadOptions | None = None) -> pd.DataFrame:
        """What the dictionary lacks in ``X``: its features farther from every centroid than
        the fitted members were, grouped and named by the LLM as candidate new clusters
        (label, description, kind, size, pieces, transcripts, examples, nearest fitted
        cluster), largest first. ``out_dir`` keeps them (``new_clusters.parquet``) with the
        rest of :meth:`transform_pieces`'s output; the estimator is not changed."""
        self._check_fitted()
        found: list[pa.Table] = []
        self._apply(X, out_dir, read_options, name_new=True, on_new=found.append)
        return (found[0] if found else _no_new_clusters()).to_pandas()

    def _apply(self, X: Source, out_dir: str | Path | None, read_options: ReadOptions | None, *,
               name_new: bool, on_new: Callable[[pa.Table], None] | None = None) -> Activations:
        cache = self.run_dir_ / LLM_CACHE if self.run_dir_ is not None else None
        return transform_with(self.dictionary_, self.config_, self.prompts_, X, out_dir=out_dir,
                              read_options=read_options, fitted_cache=cache, fitted_dir=self.run_dir_,
                              name_new=name_new, on_new=on_new, **self._backends())

    def save(self, path: str | Path) -> Path:
        """Write the fitted dictionary (cluster table, centroids, prompts, manifest) to ``path``."""
        self._check_fitted()
        dest = Path(path)
        dest.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.dictionary_.clusters, dest / "clusters.parquet")
        for kind, centers in self.dictionary_.centroids.items():
            np.save(dest / f"centroids_{kind}.npy", centers)
        for prompt in self.prompts_.values():
            copy = saved_copy(dest, prompt)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(prompt.text, encoding="utf-8")
        (dest / MANIFEST).write_bytes(orjson.dumps(self.manifest_, option=orjson.OPT_INDENT_2, default=str))
        return dest

    @classmethod
    def load(cls, path: str | Path, llm: Any = None, embedder: Any = None) -> FeatureDiscovery:
        """A fitted estimator from a run directory or a :meth:`save` folder."""
        path = Path(path)
        cfg = config_from_manifest(path)
        params = {f: getattr(cfg, f) for f in cls._get_param_names() if hasattr(cfg, f)}
        params["llm"] = llm if llm is not None else cfg.llm
        params["embedder"] = embedder if embedder is not None else cfg.embedder
        params["prompts"] = cfg.prompt_files or None
        params["run_dir"] = path
        est = cls(**params)
        est.dictionary_ = Dictionary.load(path)
        est.prompts_ = Pipeline.load_prompts(cfg)
        est.config_ = cfg
        est.manifest_ = read_manifest(path)
        est.run_dir_ = path
        return est


def _activations(run_dir: Path, dictionary: Dictionary) -> Activations:
    """The activations of a run's pieces, read through the one path: ``assignments.parquet``
    (nearest fitted centroid) and the fitted cluster table."""
    return load_activations(run_dir, clusters=dictionary.clusters, with_features=True)


def assign_run(run: RunDir, dictionary: Dictionary) -> tuple[pa.Table, np.ndarray]:
    """Each feature of ``run`` to its nearest centroid of ``dictionary`` (``assignments.parquet``,
    with ``unassigned`` where the dictionary's thresholds say it has no cluster for it), and
    the features' vectors."""
    features = run.read_table("features.parquet", ["feature_id", "kind", "text"])
    strings = run.read_table("strings.parquet").column("text")
    emb = load_matrix(run.file("embeddings.npy"))
    from featdisco.stages.cluster import string_ids

    rows = string_ids([features.column("text")], features.num_rows, strings)
    vectors = (np.asarray(emb[rows]) if len(rows)
               else np.zeros((0, emb.shape[1] if emb.ndim == 2 else 1), dtype=np.float32))
    cids, sims = dictionary.assign(features.column("kind").to_pylist(), vectors)
    table = pa.table({"feature_id": features.column("feature_id"), "kind": features.column("kind"),
                      "cluster_id": pa.array(cids, pa.int64()), "similarity": pa.array(sims, pa.float32())})
    if dictionary.floors is not None:
        table = table.append_column("unassigned", pa.array(dictionary.unassigned(cids, sims)))
    return table, vectors


def find_new(pipe: Pipeline, dictionary: Dictionary, assignments: pa.Table, vectors: np.ndarray,
             prompt: Prompt) -> tuple[pa.Table, pa.Table]:
    """Group and name the unassigned features (candidate new clusters): ``new_clusters.parquet``
    (label, description, kind, size, distinct, pieces, transcripts, examples, nearest fitted
    cluster) and the assignments with each feature's ``new_cluster`` (-1: none)."""
    from featdisco.stages.name import name_clusters

    features = pipe.dir.read_table("features.parquet", ["piece_id", "transcript_id", "text"])
    found = group_unassigned(assignments.column("kind").to_pylist(), features.column("text").to_pylist(),
                             vectors, assignments.column("cluster_id").to_numpy(),
                             assignments.column("unassigned").to_numpy(zero_copy_only=False),
                             dictionary, min_size=max(3, pipe.cfg.min_cluster_size))
    table = found.table
    if table.num_rows:
        names, _ = name_clusters(table.column("new_cluster").to_pylist(), table.column("kind").to_pylist(),
                                 found.members, pipe.engine, prompt, sample_size=pipe.cfg.sample_size,
                                 seed=pipe.cfg.seed)
        texts = features.column("text").to_pylist()
        examples = [[t for t, _ in Counter(texts[i] for i in np.nonzero(found.feature_cluster == c)[0])
                     .most_common(10)] for c in range(table.num_rows)]
        spread = [(len({features.column("piece_id")[int(i)].as_py() for i in np.nonzero(found.feature_cluster == c)[0]}),
                   len({features.column("transcript_id")[int(i)].as_py()
                        for i in np.nonzero(found.feature_cluster == c)[0]})) for c in range(table.num_rows)]
        labels = dict(zip(dictionary.clusters.column("cluster_id").to_pylist(),
                          dictionary.clusters.column("label").to_pylist(), strict=True))
        table = pa.table({
            "new_cluster": table.column("new_cluster"), "label": names.column("label"),
            "description": names.column("description"), "kind": table.column("kind"),
            "size": table.column("size"), "distinct": table.column("distinct"),
            "pieces": pa.array([p for p, _ in spread], pa.int64()),
            "transcripts": pa.array([t for _, t in spread], pa.int64()),
            "examples": pa.array(examples, pa.list_(pa.string())),
            "nearest_cluster_id": table.column("nearest_cluster_id"),
            "nearest_label": pa.array([labels.get(i) for i in table.column("nearest_cluster_id").to_pylist()],
                                      pa.string()),  # none for a kind the dictionary lacks
            "nearest_similarity": table.column("nearest_similarity"),
            "status": names.column("status"),
        }).sort_by([("size", "descending")])
    else:
        table = _no_new_clusters()
    return table, assignments.append_column("new_cluster", pa.array(found.feature_cluster, pa.int64()))


def _no_new_clusters() -> pa.Table:
    """None found: the same columns as when some are, so that code reading them works either way."""
    return pa.schema([("new_cluster", pa.int64()), ("label", pa.string()), ("description", pa.string()),
                      ("kind", pa.string()), ("size", pa.int64()), ("distinct", pa.int64()),
                      ("pieces", pa.int64()), ("transcripts", pa.int64()), ("examples", pa.list_(pa.string())),
                      ("nearest_cluster_id", pa.int64()), ("nearest_label", pa.string()),
                      ("nearest_similarity", pa.float32()), ("status", pa.string())]).empty_table()


def transform_with(dictionary: Dictionary, config: PipelineConfig, prompts: dict[str, Prompt], X: Source, *,
                   out_dir: str | Path | None = None, read_options: ReadOptions | None = None,
                   llm: Any = None, embedder: Any = None, fitted_cache: Path | None = None,
                   fitted_dir: Path | None = None, log: Any = None, name_new: bool = True,
                   on_new: Callable[[pa.Table], None] | None = None) -> Activations:
    """Apply a fitted dictionary to new transcripts: split, featurize (with the fitted
    prompts, through the fitted run's LLM cache when there is one) and embed into
    ``out_dir``, then assign each feature to its nearest centroid. Features farther from it
    than the fit's members were are marked ``unassigned``; with ``name_new`` they are also
    grouped and named as candidate new clusters (``new_clusters.parquet``, also handed to
    ``on_new``), which costs LLM calls."""
    temporary = out_dir is None
    out = Path(tempfile.mkdtemp(prefix="featdisco-transform-")) if temporary else Path(str(out_dir))
    # Writing new pieces and assignments over a fitted run would leave its clusters
    # describing transcripts they were not fitted on.
    if (fitted_dir is not None and out.resolve() == Path(fitted_dir).resolve()) or (
            (out / MANIFEST).exists() and "cluster" in (read_manifest(out).get("stages") or {})):
        raise FeatdiscoError(f"{out} holds a fitted run: write the transform's output to another folder (-o)")
    try:
        cache = fitted_cache if fitted_cache is not None and fitted_cache.exists() else None
        pipe = Pipeline(out, config, llm=llm, embedder=embedder, log=log, prompts=prompts, llm_cache=cache)
        inputs, transcripts = _split_source(X)
        pipe.run(inputs, read_options, transcripts, stages=ENCODE)
        if fitted_dir is not None:
            # which edition of the dictionary this data is assigned by: a later edit of the
            # fitted run changes its clusters, not the ones this folder keeps
            edition = dictionary_edition(dictionary.clusters, fitted_dir)
            pipe.dir.update(fitted_run=str(Path(fitted_dir).resolve()), fitted_dictionary=edition)
            if log is not None and not is_current_edition(edition, fitted_dir):  # edits None alone: not known
                log(f"note: the clusters of {fitted_dir} changed since this dictionary was loaded; "
                    "the data is assigned by the clusters loaded (load() the dictionary again for the new ones)")
        assignments, vectors = assign_run(pipe.dir, dictionary)
        if name_new and "unassigned" in assignments.column_names:
            # a pipeline of its own: the encoding one closed its cache and lock when it finished
            namer = Pipeline(out, config, llm=llm, log=log, prompts=prompts, llm_cache=cache)
            namer.account.scope = "new_clusters"  # the usage ledger's name for these calls,
            namer.account.uid = pipe.account.uid  # made by the same invocation
            namer.lock()
            try:
                new, assignments = find_new(namer, dictionary, assignments, vectors, prompts["name"])
            finally:
                namer.close()
            pipe.dir.write_table("new_clusters.parquet", new)
            if on_new is not None:
                on_new(new)
            unassigned = int(pc.sum(assignments.column("unassigned")).as_py() or 0)
            pipe.dir.update(new_in_this_data={"unassigned_features": unassigned,
                                              "features": assignments.num_rows,
                                              "new_clusters": new.num_rows,
                                              "labels": new.column("label").to_pylist()[:20]})
            if log is not None:
                log(f"new in this data: {unassigned:,} of {assignments.num_rows:,} features are unassigned; "
                    f"{new.num_rows} candidate new clusters (new_clusters.parquet)")
        pipe.dir.write_table("assignments.parquet", assignments)
        pipe.dir.write_table("clusters.parquet", observed_clusters(pipe.dir, dictionary, assignments))
        act = _activations(out, dictionary)
        if not temporary:
            sparse.save_npz(pipe.dir.file("activations.npz"), act.piece_matrix)
        return act
    finally:
        if temporary:
            shutil.rmtree(out, ignore_errors=True)


def observed_clusters(run: RunDir, dictionary: Dictionary, assignments: pa.Table) -> pa.Table:
    """The fitted cluster table with its counts (size, pieces, transcripts) over the new data,
    so ``featdisco report`` on a transform's output shows the new data through the dictionary."""
    spread = pa.table({"cluster_id": assignments.column("cluster_id"),
                       "piece_id": run.read_table("features.parquet", ["piece_id"]).column(0),
                       "transcript_id": run.read_table("features.parquet", ["transcript_id"]).column(0)}) \
        .group_by("cluster_id").aggregate([([], "count_all"), ("piece_id", "count_distinct"),
                                           ("transcript_id", "count_distinct")])
    found = {r["cluster_id"]: r for r in spread.to_pylist()}
    table = dictionary.clusters
    for name, key in (("size", "count_all"), ("pieces", "piece_id_count_distinct"),
                      ("transcripts", "transcript_id_count_distinct")):
        values = pa.array([int(found.get(c, {}).get(key, 0)) for c in table.column("cluster_id").to_pylist()],
                          pa.int64())
        table = (table.set_column(table.column_names.index(name), name, values) if name in table.column_names
                 else table.append_column(name, values))
    return table


def transform_into(fitted_dir: str | Path, X: Source, *, out_dir: str | Path | None = None,
                   read_options: ReadOptions | None = None, llm: Any = None, embedder: Any = None,
                   overrides: dict[str, Any] | None = None, log: Any = None) -> Activations:
    """Apply the dictionary fitted in ``fitted_dir`` (a run or a saved dictionary) to new
    transcripts, with its own prompts and config (``overrides`` change how calls are made)."""
    fitted_dir = Path(fitted_dir)
    cfg = config_from_manifest(fitted_dir, overrides)
    return transform_with(Dictionary.load(fitted_dir), cfg, Pipeline.load_prompts(cfg), X, out_dir=out_dir,
                          read_options=read_options, llm=llm, embedder=embedder,
                          fitted_cache=fitted_dir / LLM_CACHE, fitted_dir=fitted_dir, log=log)
