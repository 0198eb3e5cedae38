"""``FeatureDiscovery``: the method as a scikit-learn estimator for notebooks.

Parameters are stored by ``__init__`` exactly as given (so ``clone``, ``get_params`` and
``set_params`` work) and checked by ``fit``; fitted state ends in ``_``. ``fit`` runs the
pipeline into ``run_dir`` (or a temporary folder it removes, keeping the dictionary in
memory); ``transform`` featurizes new transcripts and sends each feature to its nearest
fitted centroid — the rule the cluster stage itself assigns by, and the one path both
``fit_transform`` and ``transform`` read activations through.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from featdisco.analysis.activations import Activations, load_activations
from featdisco.dictionary import Dictionary
from featdisco.errors import FeatdiscoError
from featdisco.pipeline import ENCODE, Pipeline, PipelineConfig, config_from_manifest, read_manifest
from featdisco.prompts import Prompt, saved_copy
from featdisco.rundir import LLM_CACHE, MANIFEST, RunDir
from featdisco.storage.matrix import load_matrix
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadOptions

Source = str | Path | Iterable[str | Path] | Iterable[Transcript]


def _split_source(source: Source) -> tuple[list[str | Path] | None, list[Transcript] | None]:
    if isinstance(source, str | Path):
        return [source], None
    items = list(source)
    if items and all(isinstance(i, Transcript) for i in items):
        return None, items  # type: ignore[return-value]
    return items, None  # type: ignore[return-value]


class FeatureDiscovery(BaseEstimator):
    """Discover a dictionary of behaviours from transcripts.

    ``llm`` is a backend name (``openai``, ``anthropic``, ``local``) or an object following
    :class:`featdisco.llm.base.LLMBackend`; ``embedder`` a name (``minilm``, ``st:PATH``,
    ``api:MODEL``) or an :class:`featdisco.embedders.base.Embedder`; ``prompts`` maps a
    prompt name (``featurize``, ``name``, ``rate``) to a file of the user's. The rest are
    :class:`featdisco.pipeline.PipelineConfig` fields.
    """

    def __init__(self, *, llm: Any = None, model: str | None = None, base_url: str | None = None,
                 embedder: Any = None, n_clusters: int | dict[str, int] | None = None,
                 min_features: int = 10, max_features: int = 20, max_piece_tokens: int = 2000,
                 evidence: bool = True, max_chars: int | None = None, sample_size: int = 100, rate_batch: int = 10,
                 min_cluster_size: int = 3, seed: int = 0, concurrency: int = 64,
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
        self.rate_batch = rate_batch
        self.min_cluster_size = min_cluster_size
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
        unknown = set(params["prompts"] or {}) - {"featurize", "name", "rate"}
        if unknown:
            raise FeatdiscoError(f"prompts: unknown prompt name(s) {', '.join(sorted(unknown))}; "
                                 "use featurize, name or rate")
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
            if not isinstance(value, int) or value < 1:
                raise FeatdiscoError(f"{name} must be a positive integer, not {value!r}")
        if cfg.min_features > cfg.max_features:
            raise FeatdiscoError(f"min_features ({cfg.min_features}) is more than max_features "
                                 f"({cfg.max_features})")

    def _backends(self) -> dict[str, Any]:
        return {"llm": None if isinstance(self.llm, str | None) else self.llm,
                "embedder": None if isinstance(self.embedder, str | None) else self.embedder}

    def _check_fitted(self) -> None:
        if not hasattr(self, "dictionary_"):
            raise NotFittedError("this FeatureDiscovery is not fitted: call fit() or load() first")

    # ------------------------------------------------------------ API

    def fit(self, X: Source, y: None = None, *, read_options: ReadOptions | None = None) -> FeatureDiscovery:
        """Run the whole pipeline on ``X`` (paths or transcripts)."""
        self._fit(X, read_options, keep_activations=False)
        return self

    def fit_transform(self, X: Source, y: None = None, *,
                      read_options: ReadOptions | None = None) -> Activations:
        """Fit, then the activations of the fitted pieces themselves (no extra calls)."""
        act = self._fit(X, read_options, keep_activations=True)
        assert act is not None
        return act

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
        """The label of each cluster (each column of the activation matrix)."""
        self._check_fitted()
        kinds = self.dictionary_.clusters.column("kind").to_pylist()
        ids = self.dictionary_.clusters.column("cluster_id").to_pylist()
        labels = self.dictionary_.clusters.column("label").to_pylist()
        return np.asarray([lab or f"{k} cluster {i}" for lab, k, i in zip(labels, kinds, ids, strict=True)],
                          dtype=object)

    def transform(self, X: Source, *, out_dir: str | Path | None = None,
                  read_options: ReadOptions | None = None) -> Activations:
        """Featurize new transcripts and assign each feature to its nearest fitted cluster.
        ``out_dir`` keeps the new pieces, features and assignments; without it they go to a
        temporary folder that is removed."""
        self._check_fitted()
        cache = self.run_dir_ / LLM_CACHE if self.run_dir_ is not None else None
        return transform_with(self.dictionary_, self.config_, self.prompts_, X, out_dir=out_dir,
                              read_options=read_options, fitted_cache=cache,
                              fitted_dir=self.run_dir_, **self._backends())

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


def assign_run(run: RunDir, dictionary: Dictionary) -> pa.Table:
    """Each feature of ``run`` to its nearest centroid of ``dictionary``: ``assignments.parquet``."""
    features = run.read_table("features.parquet", ["feature_id", "kind", "text"])
    strings = run.read_table("strings.parquet").column("text")
    emb = load_matrix(run.file("embeddings.npy"))
    from featdisco.stages.cluster import string_ids

    rows = string_ids([features.column("text")], features.num_rows, strings)
    vectors = (np.asarray(emb[rows]) if len(rows)
               else np.zeros((0, emb.shape[1] if emb.ndim == 2 else 1), dtype=np.float32))
    cids, sims = dictionary.assign(features.column("kind").to_pylist(), vectors)
    return pa.table({"feature_id": features.column("feature_id"), "kind": features.column("kind"),
                     "cluster_id": pa.array(cids, pa.int64()), "similarity": pa.array(sims, pa.float32())})


def transform_with(dictionary: Dictionary, config: PipelineConfig, prompts: dict[str, Prompt], X: Source, *,
                   out_dir: str | Path | None = None, read_options: ReadOptions | None = None,
                   llm: Any = None, embedder: Any = None, fitted_cache: Path | None = None,
                   fitted_dir: Path | None = None, log: Any = None) -> Activations:
    """Apply a fitted dictionary to new transcripts: split, featurize (with the fitted
    prompts, through the fitted run's LLM cache when there is one) and embed into
    ``out_dir``, then assign each feature to its nearest centroid."""
    temporary = out_dir is None
    out = Path(tempfile.mkdtemp(prefix="featdisco-transform-")) if temporary else Path(str(out_dir))
    # Writing new pieces and assignments over a fitted run would leave its clusters
    # describing transcripts they were not fitted on.
    if (fitted_dir is not None and out.resolve() == Path(fitted_dir).resolve()) or (
            (out / MANIFEST).exists() and "cluster" in (read_manifest(out).get("stages") or {})):
        raise FeatdiscoError(f"{out} holds a fitted run: write the transform's output to another folder (-o)")
    try:
        pipe = Pipeline(out, config, llm=llm, embedder=embedder, log=log, prompts=prompts,
                        llm_cache=fitted_cache if fitted_cache is not None and fitted_cache.exists() else None)
        inputs, transcripts = _split_source(X)
        pipe.run(inputs, read_options, transcripts, stages=ENCODE)
        if fitted_dir is not None:
            pipe.dir.update(fitted_run=str(Path(fitted_dir).resolve()))
        pipe.dir.write_table("assignments.parquet", assign_run(pipe.dir, dictionary))
        act = _activations(out, dictionary)
        if not temporary:
            sparse.save_npz(pipe.dir.file("activations.npz"), act.piece_matrix)
        return act
    finally:
        if temporary:
            shutil.rmtree(out, ignore_errors=True)


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
