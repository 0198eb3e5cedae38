"""Hierarchy and stability on planted embeddings: six clusters in three well separated pairs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featdisco.analysis.hierarchy import build_hierarchy
from featdisco.analysis.stability import best_jaccard, run_stability
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply

DIM = 16


def namer(req: FakeRequest) -> Reply:
    user = next(m["content"] for m in req.body["messages"] if m["role"] == "user")
    lines = [ln[2:].split() for ln in user.split("Write:")[0].splitlines() if ln.startswith("- ")]
    pairs = sorted({t[1] for t in lines if t[0] == "Pair"} | {n for t in lines if t[0] == "Parent" for n in t[3:]})
    return Reply(content=json.dumps({"label": "Parent of pairs " + " ".join(pairs),
                                     "description": "Scripted parent."}))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(namer) as srv:
        yield srv


def planted(path: Path, structured: bool = True) -> Path:
    rng = np.random.default_rng(0)
    labels = [("response", f"Pair {c // 2} side {c % 2}") for c in range(6)]
    pieces = [PlantedPiece(f"t{i}", 1, "response", [i % 6]) for i in range(240)]
    run = write_run(path, pieces, labels, feature_text=lambda c, i: f"text {c} {i // 6}")
    feats = pq.read_table(run / "features.parquet").to_pylist()
    strings = sorted({f["text"] for f in feats})
    vecs = []
    for s in strings:
        c = int(s.split()[1])
        v = np.zeros(DIM)
        if structured:
            v[c // 2] = 1.0
            v[8 + c] = 0.6
        v += rng.normal(scale=0.05 if structured else 1.0, size=DIM)
        vecs.append(v / np.linalg.norm(v))
    emb = np.asarray(vecs, dtype=np.float32)
    np.save(run / "embeddings.npy", emb)
    pq.write_table(pa.table({"string_id": list(range(len(strings))), "text": strings}), run / "strings.parquet")
    idx = {s: i for i, s in enumerate(strings)}
    cents = []
    for c in range(6):
        m = emb[[idx[s] for s in strings if int(s.split()[1]) == c]].mean(axis=0)
        cents.append(m / np.linalg.norm(m))
    np.save(run / "centroids_response.npy", np.asarray(cents, dtype=np.float32))
    return run


def test_hierarchy_pairs_siblings_and_names_parents(server: FakeOpenAIServer, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run = planted(tmp_path / "run")
    tree = build_hierarchy(run, levels=3, branching=2, llm="openai", model="fake", base_url=server.base_url)
    leaves = tree[tree["level"] == 0]
    parents = tree[tree["level"] == 1]
    assert len(leaves) == 6 and len(parents) == 3
    assert tree["size"].dtype.kind == "i"  # sizes are counts: printed "1887", not "1887.000"
    for _, p in parents.iterrows():
        kids = leaves[leaves["parent_id"] == p["node_id"]]
        assert len({lab.split()[1] for lab in kids["label"]}) == 1  # both sides of one pair
        assert p["label"] == "Parent of pairs " + kids["label"].iloc[0].split()[1]
        assert p["leaves"] == 2 and p["size"] == kids["size"].sum()
    top = tree[tree["level"] == 2]
    assert len(top) >= 1 and top["label"].str.startswith("Parent of pairs").all()
    assert sum(len(lab.split()) - 3 for lab in top["label"]) == 3  # every pair under one grandparent
    assert (parents["parent_id"] >= 0).all()
    assert (run / "analysis_hierarchy.parquet").exists()


def test_stability_is_high_on_clear_clusters_and_low_on_noise(tmp_path: Path) -> None:
    summary, detail = run_stability(planted(tmp_path / "clear"), runs=2, fraction=0.8)
    assert (summary["ari"] > 0.9).all() and (summary["matched_share"] == 1.0).all()
    assert len(detail) == 6 and (detail["reruns"] == 2).all()
    noisy, _ = run_stability(planted(tmp_path / "noise", structured=False), runs=2, fraction=0.8, write=False)
    assert noisy["ari"].mean() < 0.7


def test_best_jaccard_by_hand() -> None:
    ref = np.array([0, 0, 1, 1])
    new = np.array([5, 5, 5, 7])
    # ref 0 = {a, b}, best new 5 = {a, b, c}: 2/3; ref 1 = {c, d}: best 1/2 (with 7) or 1/4 (with 5)
    assert best_jaccard(ref, new, np.ones(4)) == pytest.approx([2 / 3, 1 / 2])
