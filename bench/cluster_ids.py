"""Stable cluster ids and union merges (issue 21 items 3 and 4), measured on a real run:
planted hh-rlhf chats, the scripted rater of ``tests/quality/harness.py`` over the fake
OpenAI server, the real MiniLM embedder and k-means, the automatic merge stage on.

1. ``featdisco edit RUN merge A B`` (the two largest clusters of a kind), then a rerun:
   the share of A∪B's features in one cluster; of the other clusters, the share that keep
   their id, keep ≥ 90% of their members under it, and keep their label.
2. A recluster with more data (``--more`` transcripts added) and one with another k-means
   seed: of the old clusters, the share whose id survives, and for those the share of their
   old features still under it; of the clusters that keep an id, the share that keep it on
   the new cluster holding most of their old features (the right one).

    python bench/cluster_ids.py [--transcripts 200] [--more 100] [--keep DIR]

``FEATDISCO_SRC=/path/to/src`` measures another checkout's code (e.g. before the fix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, os.environ.get("FEATDISCO_SRC", str(REPO / "src")))

import pyarrow.parquet as pq  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.quality.harness import handler, planted_runner, write_transcripts  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from featdisco.cli import app  # noqa: E402
from featdisco.pipeline import Pipeline, config_from_manifest  # noqa: E402


def snapshot(run: Path) -> dict[int, dict[str, Any]]:
    """Each cluster: kind, label and its features (feature ids)."""
    table = pq.read_table(run / "clusters.parquet", columns=["cluster_id", "kind", "label"]).to_pylist()
    out = {r["cluster_id"]: {"kind": r["kind"], "label": r["label"], "members": set()} for r in table}
    assign = pq.read_table(run / "assignments.parquet", columns=["feature_id", "cluster_id"]).to_pylist()
    for r in assign:
        out[r["cluster_id"]]["members"].add(r["feature_id"])
    return out


def kept(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]], skip: set[int]) -> dict[str, Any]:
    """Of the clusters of ``before`` not in ``skip``: how many keep their id, their members
    (≥ 90% under the same id) and their label; and whether each surviving id sits on the
    new cluster that holds most of its old features."""
    features = set().union(*(c["members"] for c in after.values()))
    others = [i for i in before if i not in skip]
    same_id = [i for i in others if i in after and after[i]["kind"] == before[i]["kind"]]
    share = {i: len(before[i]["members"] & after[i]["members"]) / max(1, len(before[i]["members"] & features))
             for i in same_id}
    best = {i: max(after, key=lambda j: len(before[i]["members"] & after[j]["members"])) for i in same_id}
    return {"clusters": len(others), "keep_id": round(len(same_id) / max(1, len(others)), 3),
            "keep_id_and_90pct_members": round(sum(s >= 0.9 for s in share.values()) / max(1, len(others)), 3),
            "keep_id_and_label": round(sum(after[i]["label"] == before[i]["label"] for i in same_id)
                                       / max(1, len(others)), 3),
            "median_members_kept": round(sorted(share.values())[len(share) // 2], 3) if share else None,
            "id_on_best_successor": round(sum(best[i] == i for i in same_id) / max(1, len(same_id)), 3),
            "new_ids": len(set(after) - set(before))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--transcripts", type=int, default=200)
    ap.add_argument("--more", type=int, default=100, help="transcripts added for the recluster")
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs in this folder")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="featdisco-ids-"))
    tmp.mkdir(parents=True, exist_ok=True)
    data = write_transcripts(tmp / "chats.jsonl", args.transcripts)
    more = write_transcripts(tmp / "more.jsonl", args.more, seed=5, start=args.transcripts)
    run = tmp / "run"
    out: dict[str, Any] = {}
    with FakeOpenAIServer(handler) as srv:
        assert planted_runner(srv.base_url, run, data).complete
        before = snapshot(run)
        out["features"] = sum(len(c["members"]) for c in before.values())
        out["clusters"] = len(before)
        by_kind: dict[str, list[int]] = {}
        for i, c in sorted(before.items(), key=lambda kv: -len(kv[1]["members"])):
            by_kind.setdefault(c["kind"], []).append(i)
        kind = max(by_kind, key=lambda k: len(by_kind[k]))
        a, b = by_kind[kind][:2]
        union = before[a]["members"] | before[b]["members"]
        res = CliRunner().invoke(app, ["edit", "-q", str(run), "merge", str(a), str(b)])
        assert res.exit_code == 0, res.output
        calls = srv.total
        rerun = Pipeline(run, config_from_manifest(run)).run()
        after = snapshot(run)
        holder = max(after, key=lambda j: len(union & after[j]["members"]))
        out["merge"] = {"a": a, "b": b, "kind": kind, "union_features": len(union),
                        "union_in_one_cluster": round(len(union & after[holder]["members"]) / len(union), 3),
                        "merged_id": holder, "rerun_stages_run": [t.name for t in rerun.stages if not t.skipped],
                        "rerun_calls": srv.total - calls, "others": kept(before, after, {a, b})}
        for name, change in (("more_data", {"inputs": [data, more]}), ("seed", {"seed": 1})):
            copy = tmp / f"run-{name}"
            os.system(f"rm -rf '{copy}' && cp -r '{run}' '{copy}'")
            cfg = config_from_manifest(copy, {k: v for k, v in change.items() if k != "inputs"})
            result = Pipeline(copy, cfg).run(change.get("inputs"))
            assert result.complete
            out[f"recluster_{name}"] = {
                "stages_run": [t.name for t in result.stages if not t.skipped],
                **kept(after, snapshot(copy), set())}
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
