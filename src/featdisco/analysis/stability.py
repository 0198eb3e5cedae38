"""Stability: would the clusters come out the same with another seed or another sample?

Each kind's distinct feature strings are reclustered (same k, same weights as the run) with
other seeds, on a random ``fraction`` of the strings; the new labels are compared with the
run's on the strings both saw: adjusted Rand index and NMI overall, and for every original
cluster the best Jaccard overlap with a new cluster. A cluster "has a close match" when that
overlap reaches ``match_jaccard``; clusters that rarely do are resolution artefacts rather
than behaviours, which the per-cluster table lets a reader filter out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from featdisco.analysis.activations import read_clusters, write_analysis
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir
from featdisco.stages.kmeans import SphericalKMeans
from featdisco.storage.matrix import load_matrix


def best_jaccard(ref: np.ndarray, new: np.ndarray, w: np.ndarray) -> np.ndarray:
    """For each reference label, the largest weighted Jaccard overlap with any new label."""
    r_codes, r_uniq = pd.factorize(ref, sort=True)
    n_codes, _ = pd.factorize(new)
    inter = sparse.csr_matrix((w, (r_codes, n_codes))).toarray()
    r_size = inter.sum(axis=1, keepdims=True)
    n_size = inter.sum(axis=0, keepdims=True)
    jac = inter / (r_size + n_size - inter)
    out = np.zeros(int(ref.max()) + 1 if len(ref) else 0)
    out[r_uniq] = jac.max(axis=1)
    return out


class _Rerun(TypedDict):
    """A row of ``analysis_stability.parquet``: one reclustering of a sample against the run's."""

    kind: str
    rerun: int
    seed: int
    fraction: float
    strings: int  # distinct feature texts sampled
    clusters: int
    ari: float
    nmi: float
    matched_share: float  # share of the compared clusters matched at the Jaccard threshold
    clusters_compared: int


def run_stability(run_dir: str | Path, *, runs: int = 3, fraction: float = 0.8, seed: int = 1,
                  match_jaccard: float = 0.5, write: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per kind and rerun, one row per original cluster); written as
    ``analysis_stability.parquet`` and ``analysis_stability_clusters.parquet``."""
    if not 0 < fraction <= 1:
        raise FeatdiscoError("--fraction must be in (0, 1]")
    run = RunDir(run_dir)
    clusters = read_clusters(run)
    feats = run.read_table("features.parquet").select(["feature_id", "kind", "text"]).to_pandas()
    assign = run.read_table("assignments.parquet").select(["feature_id", "cluster_id"]).to_pandas()
    strings = run.read_table("strings.parquet").column("text").to_pylist()
    emb = load_matrix(run.file("embeddings.npy"))
    index = {s: i for i, s in enumerate(strings)}
    df = feats.merge(assign, on="feature_id")
    min_size = int((run.manifest.get("config") or {}).get("min_cluster_size", 3))
    rows: list[_Rerun] = []
    per_cluster: dict[int, list[float]] = {}
    rng = np.random.default_rng(seed)
    for kind in sorted(df["kind"].unique()):
        part = df[df["kind"] == kind]
        grouped = part.groupby("text").agg(weight=("cluster_id", "size"), cluster=("cluster_id", "first"))
        sids = np.array([index[t] for t in grouped.index])
        w = grouped["weight"].to_numpy(dtype=np.float64)
        ref = grouped["cluster"].to_numpy()
        k = int((clusters["kind"] == kind).sum())
        for r in range(runs):
            take = np.sort(rng.choice(len(sids), size=max(k, round(fraction * len(sids))), replace=False))
            model = SphericalKMeans(n_clusters=k, seed=seed + 1000 * (r + 1), min_cluster_size=min_size)
            model.fit(np.ascontiguousarray(emb[sids[take]]), sample_weight=w[take].astype(np.float32))
            new = np.asarray(model.labels_)
            jac = best_jaccard(ref[take], new, w[take])
            seen = np.unique(ref[take])
            for c in seen:
                per_cluster.setdefault(int(c), []).append(float(jac[c]))
            rows.append(_Rerun(kind=kind, rerun=r, seed=seed + 1000 * (r + 1), fraction=fraction,
                               strings=len(take), clusters=k,
                               ari=adjusted_rand_score(ref[take], new),
                               nmi=normalized_mutual_info_score(ref[take], new),
                               matched_share=float((jac[seen] >= match_jaccard).mean()),
                               clusters_compared=len(seen)))
    summary = pd.DataFrame(rows)
    labels = clusters["label"].to_numpy()
    kinds = clusters["kind"].to_numpy()
    detail = pd.DataFrame([{"cluster_id": c, "kind": kinds[c], "label": labels[c], "reruns": len(v),
                            "mean_best_jaccard": float(np.mean(v)),
                            "matched_share": float(np.mean(np.asarray(v) >= match_jaccard))}
                           for c, v in sorted(per_cluster.items())])
    if write:
        write_analysis(run_dir, "stability", summary, extra={"_clusters": detail}, command="stability",
                       args={"runs": runs, "fraction": fraction, "match": match_jaccard, "seed": seed})
    return summary, detail
