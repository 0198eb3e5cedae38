"""Clusters → labels: each cluster is named from up to 100 randomly sampled member features.

The sample is stored with the label so a reader can see exactly what the namer saw. With
``name_contrast`` > 0 the namer also sees a few members of that many nearest clusters of the
same kind and is asked for a label that tells them apart (contrastive naming, as Clio does);
off by default until it measurably helps (see issue 15 and the quality notes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import numpy as np
import pyarrow as pa

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine
from featdisco.llm.replies import ClusterLabel
from featdisco.llm.summary import Failures
from featdisco.prompts import Prompt, placeholders
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.members import RAW_MEMBER_ARTEFACTS, ClusterMembers
from featdisco.transcripts.model import PIECE_KINDS

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 2  # 2: names the raw (k-means) clusters; contrastive naming

KIND_PLURALS = {"user": "user messages", "thought": "an AI model's private reasoning (thoughts)",
                "response": "an AI assistant's responses"}
LABELS_SCHEMA = pa.schema([
    ("cluster_id", pa.int64()),
    ("label", pa.string()),
    ("description", pa.string()),
    ("sample", pa.list_(pa.string())),
    ("status", pa.string()),
])


class LabelRow(TypedDict, total=False):
    """One row of a labels table (:data:`LABELS_SCHEMA`); a cluster whose naming is still
    to come has its ``cluster_id`` alone."""

    cluster_id: int
    label: str | None
    description: str | None
    sample: list[str] | None
    status: str | None


def labels_of(table: pa.Table) -> list[LabelRow]:
    """A labels table (written by this stage, the merge or the curate stage) as rows."""
    return cast(list[LabelRow], table.to_pylist())


@dataclass(slots=True)
class NameReport(Failures):
    clusters: int = 0
    ok: int = 0


def sample_members(members: Sequence[str], k: int, seed: int) -> list[str]:
    """``k`` distinct member strings, drawn at random (all of them when fewer)."""
    distinct = sorted(set(members))
    if len(distinct) <= k:
        return distinct
    return sorted(random.Random(seed).sample(distinct, k))


def contrast_block(others: Sequence[str]) -> str:
    """The prompt's ``$contrast``: members of the nearest other clusters (empty: none)."""
    if not others:
        return ""
    return ("\nFor contrast, here are features from the nearest OTHER clusters; they are not in this "
            "cluster. Choose a label that fits the features above and not these:\n\n"
            + "\n".join(f"- {x}" for x in others) + "\n")


def name_clusters(cluster_ids: Sequence[int], kinds: Sequence[str], members: Sequence[Sequence[str]],
                  engine: CallEngine, prompt: Prompt, *, sample_size: int = 100,
                  seed: int = 0, contrast: Sequence[Sequence[str]] | None = None) -> tuple[pa.Table, NameReport]:
    """One call per cluster; ``members[i]`` are the feature texts of ``cluster_ids[i]``,
    ``contrast[i]`` those of its nearest other clusters to tell it apart from."""
    samples = [sample_members(m, sample_size, seed * 1_000_003 + cid)
               for cid, m in zip(cluster_ids, members, strict=True)]
    others = contrast if contrast is not None else [()] * len(samples)
    requests = [
        LLMRequest(prompt.render(n_members=len(s), kind_plural=KIND_PLURALS[kind],
                                 members="\n".join(f"- {x}" for x in s), contrast=contrast_block(o)),
                   schema=ClusterLabel.json_schema(), schema_name=ClusterLabel.schema_name,
                   sampling=Sampling(temperature=0.0, max_tokens=200), prompt_version=prompt.version)
        for kind, s, o in zip(kinds, samples, others, strict=True)
    ]
    results = engine.run_sync(requests, desc="name")
    report = NameReport(clusters=len(requests))
    rows: dict[str, list[Any]] = {n: [] for n in LABELS_SCHEMA.names}
    for cid, sample, res in zip(cluster_ids, samples, results, strict=True):
        reply = ClusterLabel.read(res.data) if res.ok else None
        ok = reply is not None
        report.ok += ok
        if not ok:
            report.fail(res.reason or res.status)
        rows["cluster_id"].append(int(cid))
        rows["label"].append(" ".join(reply.label.split()) if reply else None)
        rows["description"].append(" ".join(reply.description.split()) if reply else None)
        rows["sample"].append(sample)
        rows["status"].append("ok" if ok else f"failed: {res.reason or res.status}")
    return pa.table(rows, schema=LABELS_SCHEMA), report


CONTRAST_MEMBERS = 5  # members shown of each neighbouring cluster


def neighbour_members(ctx: StageContext, base: pa.Table, members: ClusterMembers, n: int,
                      seed: int) -> list[list[str]]:
    """For each cluster, a few members of its ``n`` nearest clusters of the same kind (by
    centroid cosine) that are not its own members."""
    out: list[list[str]] = [[] for _ in range(base.num_rows)]
    kinds = base.column("kind").to_pylist()
    local = base.column("cluster").to_pylist()
    for kind in PIECE_KINDS:
        ids = [i for i, k in enumerate(kinds) if k == kind]
        if len(ids) < 2:
            continue
        cents = np.load(ctx.path(f"raw_centroids_{kind}.npy"))[[local[i] for i in ids]]
        sims = cents @ cents.T
        np.fill_diagonal(sims, -np.inf)
        for row, i in enumerate(ids):
            own = set(members[i])
            for j in np.argsort(-sims[row])[:n]:
                pool = [x for x in members[ids[int(j)]] if x not in own]
                out[i].extend(sample_members(pool, CONTRAST_MEMBERS, seed * 1_000_003 + i * 7919 + int(j)))
    return out


class NameStage(Stage):
    """Clusters → a ~5-word label and a sentence each, from random members' *texts* (so the
    feature texts, not only the partition, are an input: new wordings rename)."""

    name = "name"
    version = STAGE_VERSION
    # the k-means clusters (the merge stage renames what it merges); centroids for contrast
    reads = (*RAW_MEMBER_ARTEFACTS, *(f"raw_centroids_{kind}.npy" for kind in PIECE_KINDS))
    writes = ("raw_labels.parquet",)
    config = ("sample_size", "seed", "name_contrast")
    prompt = "name"
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        base, members = ClusterMembers.read(ctx, RAW_MEMBER_ARTEFACTS)
        contrast = None
        if ctx.config.name_contrast > 0:
            if "contrast" not in placeholders(ctx.prompt):
                raise FeatdiscoError(f"name_contrast needs $contrast in the name prompt ({ctx.prompt.file}); "
                                     "add it where the nearest clusters' members should go")
            contrast = neighbour_members(ctx, base, members, ctx.config.name_contrast, ctx.config.seed)
        table, report = name_clusters(base.column("cluster_id").to_pylist(), base.column("kind").to_pylist(),
                                      members, ctx.engine, ctx.prompt, sample_size=ctx.config.sample_size,
                                      seed=ctx.config.seed, contrast=contrast)
        ctx.write_table("raw_labels.parquet", table)
        return StageResult({"clusters": report.clusters, "ok": report.ok, "failed": report.failed},
                           complete=report.failed == 0)
