"""Label quality: can an LLM pick a cluster's members out of a mix, given only the label?

For each sampled cluster, ``n_members`` of its member features are shuffled together with
``n_others`` features from the nearest other clusters of the same kind (the hardest
non-members: a label that only says "about code" fails here), and the LLM marks which fit
the label. Precision is the share of marked items that are members, recall the share of
members marked. A label that names its cluster well scores high on both; a vague one has
low precision, a too-narrow one low recall.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from featdisco.analysis.activations import read_clusters, write_analysis
from featdisco.analysis.llm import close_pipeline, open_pipeline
from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.replies import LabelFit
from featdisco.prompts import load_prompt
from featdisco.stages.name import KIND_PLURALS


class _LabelScore(TypedDict):
    """A row of ``analysis_label_quality.parquet``: how well one cluster's label picked out
    its members among its neighbours' features."""

    cluster_id: int
    kind: str
    label: str
    members_shown: int
    others_shown: int
    chosen: int  # items the LLM said fit the label
    true_positives: int
    precision: float
    recall: float
    f1: float
    status: str  # ok, or failed: why


def _members_by_cluster(run_dir: Path) -> dict[int, list[str]]:
    from featdisco.rundir import RunDir

    run = RunDir(run_dir)
    feats = run.read_table("features.parquet").select(["feature_id", "text"]).to_pandas()
    assign = run.read_table("assignments.parquet").select(["feature_id", "cluster_id"]).to_pandas()
    df = feats.merge(assign, on="feature_id")
    return {int(c): sorted(set(g)) for c, g in df.groupby("cluster_id")["text"]}


def _neighbours(run_dir: Path, clusters: pd.DataFrame, cid: int, k: int) -> list[int]:
    """Nearest other clusters of the same kind by centroid cosine (any others when the run
    has no centroids)."""
    kind = clusters.loc[cid, "kind"]
    same = clusters[(clusters["kind"] == kind) & (clusters["cluster_id"] != cid)]
    path = run_dir / f"centroids_{kind}.npy"
    if not path.exists() or same.empty:
        return same["cluster_id"].tolist()[:k]
    cents = np.load(path)
    local = int(clusters.loc[cid, "cluster"])
    sims = cents[same["cluster"].to_numpy()] @ cents[local]
    return same["cluster_id"].to_numpy()[np.argsort(-sims)][:k].tolist()


def score_labels(run_dir: str | Path, *, n_clusters: int = 50, n_members: int = 10, n_others: int = 10,
                 labels: dict[int, str] | None = None, cluster_ids: list[int] | None = None,
                 seed: int = 0, llm: str | None = None, model: str | None = None,
                 base_url: str | None = None, concurrency: int | None = None, prices: str | None = None,
                 write: bool = True) -> pd.DataFrame:
    """Score labels of ``cluster_ids`` (default: ``n_clusters`` sampled at random among clusters
    with enough members); ``labels`` overrides the stored label of a cluster, e.g. to test a
    rewritten one. One call per cluster; one row per cluster with its counts."""
    run_dir = Path(run_dir)
    clusters = read_clusters_indexed(run_dir)
    members = _members_by_cluster(run_dir)
    rng = random.Random(seed)
    if cluster_ids is None:
        eligible = [c for c in clusters["cluster_id"] if len(members.get(int(c), [])) >= 2]
        cluster_ids = sorted(rng.sample(eligible, min(n_clusters, len(eligible))))
    if not cluster_ids:
        raise FeatdiscoError("no cluster has two or more distinct member features to score")
    prompt = load_prompt("score_label")
    requests, plans = [], []
    for cid in cluster_ids:
        if cid not in clusters.index:
            raise FeatdiscoError(f"cluster {cid} is not in this run")
        own = members.get(cid, [])
        pick = rng.sample(own, min(n_members, len(own)))
        others: list[str] = []
        near = _neighbours(run_dir, clusters, cid, 3)
        for nb in near:
            pool = [x for x in members.get(int(nb), []) if x not in own]
            others.extend(rng.sample(pool, min(len(pool), -(-n_others // len(near)))))
        others = rng.sample(sorted(set(others)), min(n_others, len(set(others))))
        items = [(x, True) for x in pick] + [(x, False) for x in others]
        rng.shuffle(items)
        label = (labels or {}).get(cid) or str(clusters.loc[cid, "label"])
        plans.append((cid, label, items))
        requests.append(LLMRequest(
            prompt.render(label=label, n_items=len(items), kind_plural=KIND_PLURALS[clusters.loc[cid, "kind"]],
                          items="\n".join(f"{i}. {x}" for i, (x, _) in enumerate(items, start=1))),
            schema=LabelFit.for_items(len(items)).json_schema(), schema_name=LabelFit.schema_name,
            sampling=Sampling(temperature=0.0, max_tokens=20 + 6 * len(items)), prompt_version=prompt.version))
    pipe = open_pipeline(run_dir, llm=llm, model=model, base_url=base_url, concurrency=concurrency, prices=prices,
                         analysis="label_quality")
    try:
        results = pipe.engine.run_sync(requests, desc="score labels")
    finally:
        used = close_pipeline(pipe, "label_quality")
    rows: list[_LabelScore] = []
    for (cid, label, items), res in zip(plans, results, strict=True):
        n_mem = sum(m for _, m in items)
        kind = clusters.loc[cid, "kind"]
        if res.ok:
            chosen = {i for i in LabelFit.read(res.data).fits if 1 <= i <= len(items)}
            tp = sum(items[i - 1][1] for i in chosen)
            precision = tp / len(chosen) if chosen else 0.0
            recall = tp / n_mem if n_mem else float("nan")
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append(_LabelScore(cluster_id=cid, kind=kind, label=label, members_shown=n_mem,
                                    others_shown=len(items) - n_mem, chosen=len(chosen), true_positives=tp,
                                    precision=precision, recall=recall, f1=f1, status="ok"))
        else:
            rows.append(_LabelScore(cluster_id=cid, kind=kind, label=label, members_shown=n_mem,
                                    others_shown=len(items) - n_mem, chosen=0, true_positives=0,
                                    precision=np.nan, recall=np.nan, f1=np.nan,
                                    status=f"failed: {res.reason or res.status}"))
    df = pd.DataFrame(rows).sort_values("f1", na_position="last").reset_index(drop=True)
    if write:
        write_analysis(run_dir, "label_quality", df, command="score-labels", depends="labels",  # scores the text
                       args={"clusters": n_clusters, "members": n_members, "others": n_others, "seed": seed,
                             "llm": llm, "model": model, "base_url": base_url})
    df.attrs["llm"] = used  # failed calls and why: the CLI exits 3 on any
    return df


def read_clusters_indexed(run_dir: Path) -> pd.DataFrame:
    from featdisco.rundir import RunDir

    return read_clusters(RunDir(run_dir)).set_index("cluster_id", drop=False)
