"""Write run directories whose truth is known: pieces, features, assignments and clusters
Parquet, without any LLM or embedder, for the statistics tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class PlantedPiece:
    transcript_id: str
    turn: int
    kind: str
    clusters: list[int]
    model: str = "m"
    text: str = ""
    metadata: dict[str, object] = field(default_factory=dict)


def write_run(path: Path, pieces: list[PlantedPiece], clusters: list[tuple[str, str]],
              centroids: dict[str, np.ndarray] | None = None,
              feature_text: Callable[[int, int], str] | None = None) -> Path:
    """``clusters``: (kind, label) per cluster id 0..n-1; a piece's features are one per cluster."""
    path.mkdir(parents=True, exist_ok=True)
    rows = {"piece_id": [], "transcript_id": [], "turn": [], "kind": [], "text": [], "model": [],
            "metadata": []}
    feats = {"feature_id": [], "piece_id": [], "transcript_id": [], "kind": [], "text": []}
    assign = {"feature_id": [], "kind": [], "cluster_id": [], "similarity": []}
    for p in pieces:
        pid = f"{p.transcript_id}:{p.turn}:{p.kind}"
        rows["piece_id"].append(pid)
        rows["transcript_id"].append(p.transcript_id)
        rows["turn"].append(p.turn)
        rows["kind"].append(p.kind)
        rows["text"].append(p.text or pid)
        rows["model"].append(p.model)
        rows["metadata"].append(json.dumps(p.metadata))
        for i, c in enumerate(p.clusters):
            fid = f"{pid}:{i}"
            feats["feature_id"].append(fid)
            feats["piece_id"].append(pid)
            feats["transcript_id"].append(p.transcript_id)
            feats["kind"].append(p.kind)
            feats["text"].append(feature_text(c, len(feats["text"])) if feature_text
                                 else f"feature of {clusters[c][1]} number {i % 3}")
            assign["feature_id"].append(fid)
            assign["kind"].append(p.kind)
            assign["cluster_id"].append(c)
            assign["similarity"].append(0.9)
    pq.write_table(pa.table(rows), path / "pieces.parquet")
    pq.write_table(pa.table(feats), path / "features.parquet")
    pq.write_table(pa.table({**assign, "cluster_id": pa.array(assign["cluster_id"], pa.int64())}),
                   path / "assignments.parquet")
    offsets: dict[str, int] = {}
    local = []
    for cid, (kind, _) in enumerate(clusters):
        offsets.setdefault(kind, cid)
        local.append(cid - offsets[kind])
    pq.write_table(pa.table({
        "cluster_id": pa.array(range(len(clusters)), pa.int64()),
        "kind": [k for k, _ in clusters], "cluster": pa.array(local, pa.int64()),
        "label": [lab for _, lab in clusters],
    }), path / "clusters.parquet")
    for kind, cents in (centroids or {}).items():
        np.save(path / f"centroids_{kind}.npy", cents.astype(np.float32))
    return path
