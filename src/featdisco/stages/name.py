"""Clusters → labels: each cluster is named from up to 100 randomly sampled member features.

The sample is stored with the label so a reader can see exactly what the namer saw.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine
from featdisco.prompts import Prompt
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.members import RAW_MEMBER_ARTEFACTS, ClusterMembers

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 2  # 2: names the raw (k-means) clusters

KIND_PLURALS = {"user": "user messages", "thought": "an AI model's private reasoning (thoughts)",
                "response": "an AI assistant's responses"}
LABELS_SCHEMA = pa.schema([
    ("cluster_id", pa.int64()),
    ("label", pa.string()),
    ("description", pa.string()),
    ("sample", pa.list_(pa.string())),
    ("status", pa.string()),
])
NAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "minLength": 2, "maxLength": 80},
                   "description": {"type": "string", "minLength": 2, "maxLength": 400}},
    "required": ["label", "description"],
    "additionalProperties": False,
}


@dataclass(slots=True)
class NameReport:
    clusters: int = 0
    ok: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def sample_members(members: Sequence[str], k: int, seed: int) -> list[str]:
    """``k`` distinct member strings, drawn at random (all of them when fewer)."""
    distinct = sorted(set(members))
    if len(distinct) <= k:
        return distinct
    return sorted(random.Random(seed).sample(distinct, k))


def name_clusters(cluster_ids: Sequence[int], kinds: Sequence[str], members: Sequence[Sequence[str]],
                  engine: CallEngine, prompt: Prompt, *, sample_size: int = 100,
                  seed: int = 0) -> tuple[pa.Table, NameReport]:
    """One call per cluster; ``members[i]`` are the feature texts of ``cluster_ids[i]``."""
    samples = [sample_members(m, sample_size, seed * 1_000_003 + cid)
               for cid, m in zip(cluster_ids, members, strict=True)]
    requests = [
        LLMRequest(prompt.render(n_members=len(s), kind_plural=KIND_PLURALS[kind],
                                 members="\n".join(f"- {x}" for x in s)),
                   schema=NAME_SCHEMA, schema_name="cluster_label",
                   sampling=Sampling(temperature=0.0, max_tokens=200), prompt_version=prompt.version)
        for kind, s in zip(kinds, samples, strict=True)
    ]
    results = engine.run_sync(requests, desc="name")
    report = NameReport(clusters=len(requests))
    rows: dict[str, list[Any]] = {n: [] for n in LABELS_SCHEMA.names}
    for cid, sample, res in zip(cluster_ids, samples, results, strict=True):
        ok = res.ok and isinstance(res.data, dict)
        report.ok += ok
        if not ok:
            report.failed += 1
            reason = res.reason or res.status
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
        rows["cluster_id"].append(int(cid))
        rows["label"].append(" ".join(str(res.data["label"]).split()) if ok else None)
        rows["description"].append(" ".join(str(res.data["description"]).split()) if ok else None)
        rows["sample"].append(sample)
        rows["status"].append("ok" if ok else f"failed: {res.reason or res.status}")
    return pa.table(rows, schema=LABELS_SCHEMA), report


class NameStage(Stage):
    """Clusters → a ~5-word label and a sentence each, from random members' *texts* (so the
    feature texts, not only the partition, are an input: new wordings rename)."""

    name = "name"
    version = STAGE_VERSION
    reads = RAW_MEMBER_ARTEFACTS  # the k-means clusters: the merge stage renames what it merges
    writes = ("raw_labels.parquet",)
    config = ("sample_size", "seed")
    prompt = "name"
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        base, members = ClusterMembers.read(ctx, RAW_MEMBER_ARTEFACTS)
        table, report = name_clusters(base.column("cluster_id").to_pylist(), base.column("kind").to_pylist(),
                                      members, ctx.engine, ctx.prompt, sample_size=ctx.config.sample_size,
                                      seed=ctx.config.seed)
        ctx.write_table("raw_labels.parquet", table)
        return StageResult({"clusters": report.clusters, "ok": report.ok, "failed": report.failed},
                           complete=report.failed == 0)
