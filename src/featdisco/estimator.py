"""``FeatureDiscovery``: the method as a scikit-learn-style estimator for notebooks.

``fit`` runs the whole pipeline into a run directory; ``transform`` featurizes new
transcripts and sends each new feature to its nearest fitted cluster, returning a sparse
piece × cluster activation matrix. Parameters live in ``__init__``; fitted state ends in ``_``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from scipy import sparse

from featdisco.dictionary import Dictionary, activation_matrix
from featdisco.errors import FeatdiscoError
from featdisco.pipeline import Pipeline, PipelineConfig, RunResult
from featdisco.run import LLM_CACHE, MANIFEST
from featdisco.stages.embed import load_matrix
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadOptions

Source = str | Path | Iterable[str | Path] | Iterable[Transcript]
_SAVED = ("clusters.parquet", MANIFEST)


@dataclass(slots=True)
class Activations:
    """Which clusters each piece activates. ``matrix[i, j]`` is 1 when a feature of piece
    ``pieces[i]`` fell in cluster ``clusters[j]`` (rows of the cluster table)."""

    matrix: sparse.csr_matrix
    pieces: pa.Table
    clusters: pa.Table
    features: pa.Table


def _split_source(source: Source) -> tuple[list[str | Path] | None, list[Transcript] | None]:
    if isinstance(source, str | Path):
        return [source], None
    items = list(source)
    if items and all(isinstance(i, Transcript) for i in items):
        return None, items  # type: ignore[return-value]
    return items, None  # type: ignore[return-value]


class FeatureDiscovery:
    """Discover a dictionary of behaviours from transcripts.

    ``llm`` is a backend name (``openai``, ``anthropic``, ``local``) or an object following
    :class:`featdisco.llm.base.LLMBackend`; ``embedder`` a name (``minilm``, ``st:PATH``,
    ``api:MODEL``) or an :class:`featdisco.embedders.base.Embedder`. Other keyword
    arguments are :class:`featdisco.pipeline.PipelineConfig` fields.
    """

    def __init__(self, llm: Any = None, embedder: Any = None, n_clusters: int | dict[str, int] | None = None,
                 *, model: str | None = None, base_url: str | None = None, min_features: int = 10,
                 max_features: int = 20, seed: int = 0, run_dir: str | Path | None = None,
                 **config: Any) -> None:
        self.llm = llm
        self.embedder = embedder
        self.n_clusters = n_clusters
        self.model = model
        self.base_url = base_url
        self.min_features = min_features
        self.max_features = max_features
        self.seed = seed
        self.run_dir = run_dir
        known = {f.name for f in fields(PipelineConfig)}
        unknown = set(config) - known
        if unknown:
            raise FeatdiscoError(f"unknown FeatureDiscovery option(s): {', '.join(sorted(unknown))}")
        self.config = config

    # ------------------------------------------------------------ helpers

    def _config(self) -> PipelineConfig:
        return PipelineConfig(
            llm=self.llm if isinstance(self.llm, str) else None, model=self.model, base_url=self.base_url,
            embedder=self.embedder if isinstance(self.embedder, str) else None, n_clusters=self.n_clusters,
            min_features=self.min_features, max_features=self.max_features, seed=self.seed, **self.config)

    def _pipeline(self, run_dir: Path, cfg: PipelineConfig) -> Pipeline:
        return Pipeline(run_dir, cfg, llm=None if isinstance(self.llm, str | None) else self.llm,
                        embedder=None if isinstance(self.embedder, str | None) else self.embedder)

    def _check_fitted(self) -> None:
        if not hasattr(self, "dictionary_"):
            raise FeatdiscoError("this FeatureDiscovery is not fitted: call fit() or load() first")

    # ------------------------------------------------------------ API

    def fit(self, X: Source, y: None = None, *, read_options: ReadOptions | None = None) -> FeatureDiscovery:
        """Run the whole pipeline on ``X`` (paths or transcripts)."""
        run_dir = Path(self.run_dir) if self.run_dir else Path(tempfile.mkdtemp(prefix="featdisco-run-"))
        inputs, transcripts = _split_source(X)
        result: RunResult = self._pipeline(run_dir, self._config()).run(inputs, read_options, transcripts)
        if not result.complete:
            raise FeatdiscoError(f"the run in {run_dir} did not complete"
                                 f"{': ' + result.stopped_reason if result.stopped_reason else ''}; "
                                 "fit() again to resume")
        self.run_dir_ = run_dir
        self.result_ = result
        self.dictionary_ = Dictionary.load(run_dir)
        self.clusters_ = self.dictionary_.clusters
        return self

    def fit_transform(self, X: Source, y: None = None, *,
                      read_options: ReadOptions | None = None) -> Activations:
        """Fit, then the activations of the fitted pieces themselves (no extra calls)."""
        self.fit(X, read_options=read_options)
        d = self.run_dir_
        from featdisco.run import RunDir

        rd = RunDir(d)
        pieces = rd.read_table("pieces.parquet")
        features = rd.read_table("features.parquet")
        assignments = rd.read_table("assignments.parquet")
        cids = np.asarray(assignments.column("cluster_id").to_numpy(), dtype=np.int64)
        m = activation_matrix(pieces.column("piece_id").to_pylist(),
                              features.column("piece_id").to_pylist(), cids, self.dictionary_.n_clusters)
        return Activations(m, pieces, self.clusters_, features.append_column("cluster_id", pa.array(cids)))

    def transform(self, X: Source, *, out_dir: str | Path | None = None,
                  read_options: ReadOptions | None = None) -> Activations:
        """Featurize new transcripts and assign each feature to its nearest fitted cluster."""
        self._check_fitted()
        return transform_into(self.run_dir_, X, out_dir=out_dir, read_options=read_options,
                              llm=None if isinstance(self.llm, str | None) else self.llm,
                              embedder=None if isinstance(self.embedder, str | None) else self.embedder,
                              dictionary=self.dictionary_)

    def save(self, path: str | Path) -> Path:
        """Copy the fitted dictionary (cluster table, centroids, prompts, manifest) to ``path``."""
        self._check_fitted()
        dest = Path(path)
        dest.mkdir(parents=True, exist_ok=True)
        src = Path(self.run_dir_)
        for name in (*_SAVED, *(f.name for f in src.glob("centroids_*.npy"))):
            shutil.copy2(src / name, dest / name)
        if (src / "prompts").is_dir():
            shutil.copytree(src / "prompts", dest / "prompts", dirs_exist_ok=True)
        return dest

    @classmethod
    def load(cls, path: str | Path, llm: Any = None, embedder: Any = None) -> FeatureDiscovery:
        """A fitted estimator from a run directory or a :meth:`save` folder."""
        path = Path(path)
        manifest = _manifest(path)
        cfg = dict(manifest.get("config") or {})
        est = cls(llm=llm if llm is not None else cfg.pop("llm", None),
                  embedder=embedder if embedder is not None else cfg.pop("embedder", None),
                  **{k: v for k, v in cfg.items() if k not in ("llm", "embedder")})
        est.run_dir_ = path
        est.dictionary_ = Dictionary.load(path)
        est.clusters_ = est.dictionary_.clusters
        return est


def _manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not mpath.exists():
        raise FeatdiscoError(f"{path} is not a featdisco run (no {MANIFEST})")
    data = orjson.loads(mpath.read_bytes())
    return data if isinstance(data, dict) else {}


def transform_into(fitted_dir: str | Path, X: Source, *, out_dir: str | Path | None = None,
                   read_options: ReadOptions | None = None, llm: Any = None, embedder: Any = None,
                   dictionary: Dictionary | None = None, overrides: dict[str, Any] | None = None,
                   log: Any = None) -> Activations:
    """Apply the dictionary fitted in ``fitted_dir`` to new transcripts, writing the new
    pieces, features, assignments and activation matrix to ``out_dir``."""
    fitted_dir = Path(fitted_dir)
    manifest = _manifest(fitted_dir)
    known = {f.name for f in fields(PipelineConfig)}
    cfg_dict = {k: v for k, v in (manifest.get("config") or {}).items() if k in known}
    cfg_dict.update({k: v for k, v in (overrides or {}).items() if v is not None})
    prompt_dir = fitted_dir / "prompts"
    if prompt_dir.is_dir():  # the exact prompts the dictionary was fitted with
        cfg_dict["prompt_files"] = {p.name.split(".")[0]: str(p) for p in prompt_dir.glob("*.txt")}
    cfg = PipelineConfig(**cfg_dict)
    dictionary = dictionary or Dictionary.load(fitted_dir)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="featdisco-transform-"))
    # Writing new pieces and assignments over a fitted run would leave its clusters
    # describing transcripts they were not fitted on.
    if out.resolve() == fitted_dir.resolve() or (
            (out / MANIFEST).exists() and "cluster" in (_manifest(out).get("stages") or {})):
        raise FeatdiscoError(f"{out} holds a fitted run: write the transform's output to "
                             "another folder (-o)")
    fitted_cache = fitted_dir / LLM_CACHE
    pipe = Pipeline(out, cfg, llm=llm, embedder=embedder, log=log,
                    llm_cache=fitted_cache if fitted_cache.exists() else None)
    inputs, transcripts = _split_source(X)
    try:
        pipe.lock()
        pieces_hash = pipe.split(inputs, read_options, transcripts)
        features_hash, _ = pipe.featurize(pieces_hash)
        pipe.embed(features_hash)
    finally:
        pipe.close()
    pieces = pipe.dir.read_table("pieces.parquet")
    features = pipe.dir.read_table("features.parquet")
    strings = pipe.dir.read_table("strings.parquet").column("text").to_pylist()
    index = {s: i for i, s in enumerate(strings)}
    emb = load_matrix(pipe.dir.file("embeddings.npy"))
    rows = np.fromiter((index[t] for t in features.column("text").to_pylist()), dtype=np.int64,
                       count=features.num_rows)
    vectors = np.asarray(emb[rows]) if len(rows) else np.zeros((0, emb.shape[1] if emb.ndim == 2 else 1),
                                                                 dtype=np.float32)
    cids, sims = dictionary.assign(features.column("kind").to_pylist(), vectors)
    assignments = pa.table({"feature_id": features.column("feature_id"), "kind": features.column("kind"),
                            "cluster_id": pa.array(cids, pa.int64()),
                            "similarity": pa.array(sims, pa.float32())})
    pipe.dir.write_table("assignments.parquet", assignments)
    m = activation_matrix(pieces.column("piece_id").to_pylist(), features.column("piece_id").to_pylist(),
                          cids, dictionary.n_clusters)
    sparse.save_npz(pipe.dir.file("activations.npz"), m)
    return Activations(m, pieces, dictionary.clusters,
                       features.append_column("cluster_id", pa.array(cids, pa.int64())))
