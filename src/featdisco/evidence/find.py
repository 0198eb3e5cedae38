"""``featdisco find RUN "query"``: which clusters are about something, ranked by meaning.

A run of 20k clusters cannot be read label by label, and a label's words need not be the
researcher's ("sandbagging" may be named "Deliberately underperforms"). The query is
embedded with the run's own embedder (the one recorded in its manifest), so it lives in the
space the features were clustered in; each cluster is scored by the query's cosine
similarity to its members, the distinct feature strings of ``embeddings.npy``. The score is
the mean of the :data:`TOP_MEMBERS` best members' similarities: one stray member does not
lift a cluster that is about something else, and a small cluster is not penalised for size.

A ranking always has a first place, so a query about nothing would still return "matches".
Only clusters whose score clears a relevance floor are kept. The floor is calibrated on the
run's own embedder and strings: :data:`NULL_QUERIES` random letter strings (seeded) are
scored like the query, and the floor is the best top-member mean any of them reaches
(:func:`relevance_floor`). Cosine scales differ between embedders, so no constant would do.
On the default MiniLM, in a run of 3,900 feature strings, it came out at 0.34: nonsense
queries ("zxqv blorp", "12345", "asdfghjkl", "lorem ipsum dolor sit amet") scored 0.17-0.32
and were refused, real topics ("apology", "code", "cooking recipes", "rhymes") 0.64-0.72.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from featdisco.embedders import recorded_embedder
from featdisco.embedders.base import EmbedderError, check_output
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir
from featdisco.storage.matrix import read_rows
from featdisco.transcripts.model import PIECE_KINDS

TOP_MEMBERS = 3
NULL_QUERIES = 32  # random strings whose best score sets the relevance floor
_NULL_SEED = 20261206
_CHUNK = 65_536  # rows of the embedding matrix read at a time
COLUMNS = ["rank", "cluster_id", "kind", "label", "score", "size", "pieces", "kind_pieces", "prevalence",
           "transcripts", "best_member", "best_similarity", "description", "private"]


def run_embedder_name(run: RunDir) -> str | None:
    """The embedder the run's features were embedded with (``--embedder``, or the default of
    the day the run recorded none; None = today's default)."""
    return recorded_embedder(run.manifest.get("config"))


def string_similarities(path: Path, query: NDArray[np.float32]) -> NDArray[np.float32]:
    """Cosine similarity of a unit ``query`` (or of each column of a dim x m matrix of
    them) to every row of the run's unit-row matrix, read a window of rows at a time (the
    matrix of a big run is never held whole)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                       else np.lib.format.read_array_header_2_0(f))
    n, dim = shape
    if dim != query.shape[0]:
        raise FeatdiscoError(f"{path} holds {dim}-d vectors but the embedder gives {len(query)}-d ones: "
                             "find must embed the query with the run's own embedder")
    out = np.empty((n, *query.shape[1:]), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        rows = np.arange(s, min(n, s + _CHUNK), dtype=np.int64)
        out[s:s + len(rows)] = read_rows(path, rows) @ query
    return out


def null_queries(n: int = NULL_QUERIES) -> list[str]:
    """Seeded random lowercase strings of 3-20 letters and spaces: queries about nothing."""
    rng = np.random.default_rng(_NULL_SEED)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz     "))
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 21)))).strip() or "zq" for _ in range(n)]


def relevance_floor(path: Path, embedder: Any) -> float:
    """The best score (mean of the :data:`TOP_MEMBERS` most similar strings) that any of
    :func:`null_queries` reaches among the run's strings: a bound on what a query about
    nothing scores on any cluster, in this embedder's cosine scale."""
    nulls = null_queries()
    vecs = check_output(np.asarray(embedder.embed(nulls)), len(nulls), int(embedder.dim), embedder.name)
    sims = string_similarities(path, np.ascontiguousarray(vecs.T, dtype=np.float32))
    k = min(TOP_MEMBERS, sims.shape[0])
    if k == 0:
        return 0.0
    best = -np.partition(-sims, k - 1, axis=0)[:k]
    return float(best.mean(axis=0).max())


def find_clusters(run_dir: str | Path, query: str, *, top: int | None = 10, kinds: list[str] | None = None,
                  hidden: frozenset[int] = frozenset(), embedder: Any = None) -> pd.DataFrame:
    """The ``top`` clusters (all when None) most similar to ``query``, best first, with
    :data:`COLUMNS`; the clusters in ``hidden`` (private or rare, see
    :mod:`featdisco.analysis.visibility`) are left out before ranking. ``embedder`` (an
    object) overrides the run's own, for tests and the Python API."""
    run = RunDir(run_dir)
    if not query.strip():
        raise FeatdiscoError("the query is empty")
    for k in kinds or []:
        if k not in PIECE_KINDS:
            raise FeatdiscoError(f"--kind {k!r}: use {', '.join(PIECE_KINDS)}")
    for name in ("strings.parquet", "embeddings.npy", "pieces.parquet", "features.parquet", "assignments.parquet"):
        if not run.file(name).exists():
            raise FeatdiscoError(f"{run.path} has no {name}: find needs a run that finished its "
                                 "embed and cluster stages (`featdisco run`)")
    if embedder is None:
        from featdisco.embedders import make_embedder

        embedder = make_embedder(run_embedder_name(run))
    q = check_output(np.asarray(embedder.embed([query])), 1, int(embedder.dim), embedder.name)[0]
    sims = string_similarities(run.file("embeddings.npy"), q)
    strings = run.read_table("strings.parquet", columns=["text"]).column("text")
    if len(strings) != len(sims):
        raise EmbedderError(f"{run.path}: strings.parquet has {len(strings)} rows but embeddings.npy "
                            f"{len(sims)}; rerun the embed stage")
    best = _cluster_scores(run, strings, sims)
    floor = relevance_floor(run.file("embeddings.npy"), embedder)
    clusters = _cluster_table(run)
    df = clusters.merge(best, on="cluster_id", how="inner")
    below = df["score"] < floor
    if kinds:
        df = df[df["kind"].isin(kinds)]
    df = df[~df["cluster_id"].isin(hidden)]
    best_score = float(df["score"].max()) if len(df) else float("nan")
    df = df[~below.loc[df.index]]
    df = df.sort_values(["score", "cluster_id"], ascending=[False, True])
    df = (df if top is None else df.head(top)).reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    df = df[COLUMNS]
    df.attrs.update(floor=floor, best_score=best_score)
    return df


def _cluster_scores(run: RunDir, strings: Any, sims: NDArray[np.float32]) -> pd.DataFrame:
    """Per cluster: mean similarity of its TOP_MEMBERS best distinct members, and the best."""
    from featdisco.evidence.validate import features_with_clusters
    from featdisco.stages.cluster import string_ids

    feats = features_with_clusters(run, ["text"])
    sids = string_ids([feats.column("text")], feats.num_rows, strings)
    cid = np.asarray(feats.column("cluster_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = cid >= 0
    pairs = np.unique(np.stack([cid[keep], sids[keep]], axis=1), axis=0)  # distinct (cluster, string)
    c, s = pairs[:, 0], pairs[:, 1]
    sim = sims[s].astype(np.float64)
    order = np.lexsort((-sim, c))  # by cluster, best member first
    c, s, sim = c[order], s[order], sim[order]
    starts = np.r_[0, np.flatnonzero(np.diff(c)) + 1] if len(c) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(c)) - np.repeat(starts, np.diff(np.r_[starts, len(c)]))
    top = rank < TOP_MEMBERS
    score = pd.Series(sim[top]).groupby(c[top]).mean()
    return pd.DataFrame({
        "cluster_id": c[starts], "score": score.loc[c[starts]].to_numpy(),
        "best_member": pc.take(strings, s[starts]).to_pylist() if len(starts) else [],
        "best_similarity": sim[starts]})


def _cluster_table(run: RunDir) -> pd.DataFrame:
    """Label, description, size and prevalence per cluster (the fitted dictionary's labels
    with this data's counts for a transform's output)."""
    from featdisco.analysis.activations import recounted_clusters

    df = recounted_clusters(run.path).to_pandas()
    for col, default in (("label", None), ("description", None), ("private", False),
                         ("pieces", 0), ("transcripts", 0)):
        if col not in df.columns:
            df[col] = default
    df["private"] = df["private"].fillna(False).astype(bool)
    df["label"] = [lab if isinstance(lab, str) and lab else f"{k} cluster {c}"
                   for lab, k, c in zip(df["label"], df["kind"], df["cluster"], strict=True)]
    kinds = pq.read_table(run.file("pieces.parquet"), columns=["kind"]).column("kind")
    counts = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(kinds).to_pylist()}
    df["kind_pieces"] = [counts.get(k, 0) for k in df["kind"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        df["prevalence"] = np.where(df["kind_pieces"] > 0, df["pieces"] / df["kind_pieces"].clip(lower=1),
                                    np.nan)
    return df[["cluster_id", "kind", "label", "description", "size", "pieces", "kind_pieces", "prevalence",
               "transcripts", "private"]]
