"""Clusters → interest ratings, 10 at a time so the model calibrates its scale across a
batch, with a flag for clusters that would reveal private user information."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine
from featdisco.llm.replies import Rating, Ratings
from featdisco.prompts import Prompt
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.members import MEMBER_ARTEFACTS, ClusterMembers
from featdisco.stages.name import KIND_PLURALS

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 1

RATINGS_SCHEMA = pa.schema([
    ("cluster_id", pa.int64()),
    ("interest", pa.int32()),
    ("reason", pa.string()),
    ("private", pa.bool_()),
    ("status", pa.string()),
])


@dataclass(slots=True)
class RateReport:
    clusters: int = 0
    batches: int = 0
    rated: int = 0
    failed: int = 0
    private: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def batches_of(cluster_ids: Sequence[int], kinds: Sequence[str], batch_size: int,
               seed: int) -> list[list[int]]:
    """Positions grouped into batches within one kind, shuffled so that each batch mixes
    large and small clusters (a batch of near-twins calibrates nothing)."""
    by_kind: dict[str, list[int]] = {}
    for pos, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(pos)
    out: list[list[int]] = []
    rng = random.Random(seed)
    for kind in sorted(by_kind):
        positions = by_kind[kind]
        rng.shuffle(positions)
        out.extend(positions[i:i + batch_size] for i in range(0, len(positions), batch_size))
    return out


def rate_clusters(cluster_ids: Sequence[int], kinds: Sequence[str], labels: Sequence[str | None],
                  examples: Sequence[Sequence[str]], engine: CallEngine, prompt: Prompt, *,
                  batch_size: int = 10, seed: int = 0) -> tuple[pa.Table, RateReport]:
    groups = batches_of(cluster_ids, kinds, batch_size, seed)
    requests = []
    for group in groups:
        lines = []
        for i, pos in enumerate(group, start=1):
            ex = "; ".join(examples[pos][:5])
            lines.append(f"{i}. label: {labels[pos] or '(unnamed)'}\n   examples: {ex}")
        requests.append(LLMRequest(
            prompt.render(n_clusters=len(group), kind_plural=KIND_PLURALS[kinds[group[0]]],
                          clusters="\n".join(lines)),
            schema=Ratings.for_batch(len(group)).json_schema(), schema_name=Ratings.schema_name,
            sampling=Sampling(temperature=0.0, max_tokens=120 * len(group) + 50),
            prompt_version=prompt.version))
    results = engine.run_sync(requests, desc="rate")
    report = RateReport(clusters=len(cluster_ids), batches=len(groups))
    found: dict[int, tuple[int | None, str | None, bool | None, str]] = {}
    for group, res in zip(groups, results, strict=True):
        got: dict[int, Rating] = {}
        if res.ok:
            for rating in Ratings.read(res.data).ratings:
                got.setdefault(rating.id, rating)
        for i, pos in enumerate(group, start=1):
            r = got.get(i)
            if r is None:
                status = f"failed: {res.reason or res.status}" if not res.ok else "failed: missing"
                found[pos] = (None, None, None, status)
                reason = status.removeprefix("failed: ")
                report.reasons[reason] = report.reasons.get(reason, 0) + 1
            else:
                found[pos] = (r.interest, " ".join(r.reason.split()), r.private, "ok")
    rows: dict[str, list[Any]] = {n: [] for n in RATINGS_SCHEMA.names}
    for pos, cid in enumerate(cluster_ids):
        interest, why, private, state = found[pos]
        rows["cluster_id"].append(int(cid))
        rows["interest"].append(interest)
        rows["reason"].append(why)
        rows["private"].append(private)
        rows["status"].append(state)
        report.rated += state == "ok"
        report.failed += state != "ok"
        report.private += bool(private)
    return pa.table(rows, schema=RATINGS_SCHEMA), report


class RateStage(Stage):
    """Clusters (label + most common members) → interest 1-100, a reason, a privacy flag."""

    name = "rate"
    version = STAGE_VERSION
    reads = (*MEMBER_ARTEFACTS, "labels.parquet")
    writes = ("ratings.parquet",)
    config = ("rate_batch", "seed")
    prompt = "rate"
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        base, members = ClusterMembers.read(ctx)
        labels = ctx.read_table("labels.parquet").column("label").to_pylist()
        examples = [members.most_common(i, 5) for i in range(len(members))]
        table, report = rate_clusters(base.column("cluster_id").to_pylist(), base.column("kind").to_pylist(),
                                      labels, examples, ctx.engine, ctx.prompt,
                                      batch_size=ctx.config.rate_batch, seed=ctx.config.seed)
        ctx.write_table("ratings.parquet", table)
        return StageResult({"clusters": report.clusters, "batches": report.batches, "rated": report.rated,
                            "failed": report.failed, "private": report.private},
                           complete=report.failed == 0)
