"""A hierarchy over clusters for browsing thousands of them: leaves are the run's clusters,
parents come from spherical k-means on the leaf centroids (weighted by cluster size), per
kind, and each parent is named by the LLM from a sample of its children's labels — the same
naming stage as clusters, with the ``name_parent`` prompt. Stored as a tree table: one row per
node with its parent, level and, for leaves, the cluster id.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from featdisco.analysis.activations import read_clusters, write_analysis
from featdisco.analysis.llm import LLMChoice, close_pipeline, open_pipeline
from featdisco.errors import FeatdiscoError
from featdisco.llm.summary import LLMUse
from featdisco.prompts import load_prompt
from featdisco.rundir import RunDir
from featdisco.stages.kmeans import SphericalKMeans
from featdisco.stages.name import name_clusters


class _Node(TypedDict):
    """A node of the tree, one row of ``analysis_hierarchy.parquet``: a cluster (level 0,
    its ``cluster_id``) or a parent (level 1 or 2, ``cluster_id`` -1, named by the LLM)."""

    node_id: int
    parent_id: int  # -1: a root
    level: int
    kind: str
    cluster_id: int
    label: str | None
    description: str | None
    size: int  # features under it
    children: int
    leaves: int  # clusters under it


def _group(vectors: np.ndarray, weights: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and unit centroids of ``k`` groups of unit vectors."""
    k = max(1, min(k, len(vectors)))
    model = SphericalKMeans(n_clusters=k, seed=seed, min_cluster_size=1)
    model.fit(np.ascontiguousarray(vectors, dtype=np.float32), sample_weight=np.maximum(weights, 1e-3))
    return np.asarray(model.labels_), np.asarray(model.cluster_centers_)


def build_hierarchy(run_dir: str | Path, *, levels: int = 2, branching: float | None = None, seed: int = 0,
                    llm: str | None = None, model: str | None = None, base_url: str | None = None,
                    concurrency: int | None = None, prices: str | None = None, write: bool = True) -> pd.DataFrame:
    """``levels`` = 2 (clusters and parents) or 3 (and grandparents). Each level has about
    ``n / branching`` groups of the level below (default ``branching = √n``, so 20k clusters
    make ~140 parents and ~12 grandparents at three levels)."""
    if levels not in (2, 3):
        raise FeatdiscoError("--levels must be 2 or 3")
    run = RunDir(run_dir)
    clusters = read_clusters(run)
    size = clusters["size"].to_numpy(dtype=np.int64) if "size" in clusters else np.ones(len(clusters), np.int64)
    nodes: list[_Node] = []
    to_name: list[tuple[int, str, list[str]]] = []  # node position, kind, child labels
    for kind in sorted(clusters["kind"].dropna().unique()):  # a retired id's row has no kind
        path = run.file(f"centroids_{kind}.npy")
        if not path.exists():
            raise FeatdiscoError(f"{path} is missing: the hierarchy groups cluster centroids")
        cents = np.load(path)
        sub = clusters[clusters["kind"] == kind]
        vecs = cents[sub["cluster"].to_numpy()]
        ids = [len(nodes) + i for i in range(len(sub))]
        for i, (_, row) in enumerate(sub.iterrows()):
            nodes.append({"node_id": ids[i], "parent_id": -1, "level": 0, "kind": kind,
                          "cluster_id": int(row["cluster_id"]), "label": row["label"],
                          "description": row.get("description"), "size": int(size[row["cluster_id"]]),
                          "children": 0, "leaves": 1})
        weights = size[sub["cluster_id"].to_numpy()].astype(np.float64)
        for level in range(1, levels):
            n = len(ids)
            k = max(1, round(n / (branching or math.sqrt(n)))) if n > 1 else 1
            groups, centers = _group(vecs, weights, k, seed + level)
            parent_ids = []
            for g in range(len(centers)):
                members = [ids[i] for i in np.nonzero(groups == g)[0]]
                if not members:
                    continue
                pid = len(nodes)
                parent_ids.append((g, pid))
                for m in members:
                    nodes[m]["parent_id"] = pid
                nodes.append({"node_id": pid, "parent_id": -1, "level": level, "kind": kind, "cluster_id": -1,
                              "label": None, "description": None,
                              "size": int(sum(nodes[m]["size"] for m in members)),
                              "children": len(members), "leaves": int(sum(nodes[m]["leaves"] for m in members))})
                to_name.append((pid, kind, [str(nodes[m]["label"]) for m in members]))
            ids = [pid for _, pid in parent_ids]
            vecs = centers[[g for g, _ in parent_ids]]
            weights = np.array([nodes[p]["size"] for p in ids], dtype=np.float64)
            if len(ids) == 1:
                break
    used = _name(run_dir, nodes, to_name, seed, LLMChoice(llm=llm, model=model, base_url=base_url,
                                                           concurrency=concurrency, prices=prices))
    df = pd.DataFrame(nodes)
    if write:
        # one tree per run: another one replaces it; parents are named from their children's
        # labels, so a rename makes it stale
        write_analysis(run_dir, "hierarchy", df, depends="labels",
                       command="hierarchy", args={"levels": levels, "branching": branching, "seed": seed,
                                                  "llm": llm, "model": model, "base_url": base_url})
    df.attrs["llm"] = used  # failed naming calls and why: the CLI exits 3 on any
    return df


def _name(run_dir: str | Path, nodes: list[_Node], to_name: list[tuple[int, str, list[str]]], seed: int,
          llm_options: LLMChoice) -> LLMUse | None:
    """Name parents level by level so that grandparents see their children's new names;
    returns the LLM use (None: nothing to name)."""
    if not to_name:
        return None
    prompt = load_prompt("name_parent")
    pipe = open_pipeline(run_dir, **llm_options, analysis="hierarchy")
    try:
        for level in sorted({nodes[p]["level"] for p, _, _ in to_name}):
            batch = [(p, k) for p, k, _ in to_name if nodes[p]["level"] == level]
            children = [[str(n["label"]) for n in nodes if n["parent_id"] == p] for p, _ in batch]
            table, _ = name_clusters([p for p, _ in batch], [k for _, k in batch], children, pipe.engine,
                                     prompt, sample_size=100, seed=seed)
            for (p, _), label, desc in zip(batch, table.column("label").to_pylist(),
                                           table.column("description").to_pylist(), strict=True):
                nodes[p]["label"] = label or f"Group of {nodes[p]['children']} clusters"
                nodes[p]["description"] = desc
    finally:
        used = close_pipeline(pipe, "hierarchy")
    return used
