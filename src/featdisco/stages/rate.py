"""Clusters → interest ratings, 10 at a time so the model calibrates its scale across a
batch, with a flag for clusters that would reveal private user information."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import pyarrow as pa

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine
from featdisco.llm.replies import Rating, Ratings
from featdisco.llm.summary import Failures
from featdisco.prompts import Prompt
from featdisco.stages.base import Stage, StageConfig, StageContext, StageResult
from featdisco.stages.members import MEMBER_ARTEFACTS, ClusterMembers
from featdisco.stages.name import KIND_PLURALS

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 2  # 2: uninformative batches and privacy flags without a named reason not used

RATINGS_SCHEMA = pa.schema([
    ("cluster_id", pa.int64()),
    ("interest", pa.int32()),  # None when its batch was uninformative (see ``judge_batch``)
    ("reason", pa.string()),
    ("private", pa.bool_()),  # the flag as it acts: only with a reason naming private data
    ("private_reason", pa.string()),
    ("status", pa.string()),
    ("discarded", pa.string()),  # why a rating or a privacy flag was not used, else None
])

# Kinds of private information about people; a privacy flag must name one (``private_reason``).
# "private reasoning of an AI model" names none of them: a thought is not a user's secret.
PRIVATE_DATA = re.compile(
    r"\b(names?|surnames?|address(es)?|e-?mails?|phone|telephone|health|medical|diagnos\w*|illness\w*|"
    r"diseases?|medications?|prescriptions?|financ\w*|bank\w*|salar\w*|income|debts?|credit|passwords?|"
    r"credentials?|social security|ssn|passports?|birth\w*|locations?|home|identit\w*|ids?|accounts?|"
    r"ip|licen[cs]e|religio\w*|sexual\w*|ethnic\w*|criminal|immigration|employers?|workplaces?|"
    r"children|relatives|family|doxx\w*|personally identifiable|pii)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RateConfig(StageConfig):
    """What shapes the ratings: clusters per call (the scale is calibrated within a batch;
    0: no rating calls at all, for a quick look such as the demo) and the seed that draws
    each cluster's examples."""

    rate_batch: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate_batch < 0:
            raise FeatdiscoError(f"--rate-batch must be 0 (no rating) or more, got {self.rate_batch}")


@dataclass(slots=True)
class RateReport(Failures):
    clusters: int = 0
    batches: int = 0
    rated: int = 0
    private: int = 0
    uninformative_batches: int = 0
    unranked: int = 0  # clusters of uninformative batches: rated, but not ranked by it
    private_discarded: int = 0
    why_uninformative: dict[str, int] = field(default_factory=dict)
    discarded_example: str | None = None

    def notes(self) -> list[str]:
        """What a reader must be told: ratings and flags that were not used, and why."""
        out = []
        if self.uninformative_batches:
            why = ", ".join(f"{k} {v}" for k, v in self.why_uninformative.items())
            out.append(f"ratings: {self.uninformative_batches} of {self.batches} batches were uninformative "
                       f"({why}); their {self.unranked} clusters are not ranked by interest")
        if self.private_discarded:
            out.append(f"privacy flags: {self.private_discarded} discarded because their reason names nothing "
                       f"private in the examples (e.g. \"{self.discarded_example}\"); those clusters are shown")
        return out


def _words(text: str) -> tuple[str, ...]:
    """A reason's words, lowercased: reasons that differ only in case or punctuation are one."""
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def judge_batch(interests: Sequence[int], reasons: Sequence[str]) -> str | None:
    """Why a batch's ratings carry no information (all scores the same, or one reason copied
    for every cluster), else None. A batch of one cannot be judged this way."""
    if len(interests) < 2:
        return None
    if len(set(interests)) == 1:
        return f"every score {interests[0]}"
    if len({_words(r) for r in reasons}) == 1:
        return "the same reason for every cluster"
    return None


def privacy_reason_names_data(reason: str | None) -> bool:
    """Whether a privacy flag's reason names a kind of private information about people."""
    return bool(reason and PRIVATE_DATA.search(reason))


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


class _Rated(TypedDict, total=False):
    """A cluster's rating as the table stores it; a failed one has only its status."""

    interest: int | None  # None: discarded (an uninformative batch)
    reason: str
    private: bool
    private_reason: str | None
    status: str  # ok, or failed: why
    discarded: str | None  # what was discarded and why


NOT_RATED = "not rated"  # the status of every cluster with rate_batch 0


def unrated(cluster_ids: Sequence[int]) -> tuple[pa.Table, RateReport]:
    """The ratings table when rating is off (``rate_batch`` 0): no interest and no privacy
    flag (null: not checked, as for a failed rating), nothing sent. Readers then order
    clusters by size."""
    n = len(cluster_ids)
    rows: dict[str, list[Any]] = {name: [None] * n for name in RATINGS_SCHEMA.names}
    rows["cluster_id"] = [int(c) for c in cluster_ids]
    rows["status"] = [NOT_RATED] * n
    return pa.table(rows, schema=RATINGS_SCHEMA), RateReport(clusters=n)


def rate_clusters(cluster_ids: Sequence[int], kinds: Sequence[str], labels: Sequence[str | None],
                  examples: Sequence[Sequence[str]], engine: CallEngine, prompt: Prompt, *,
                  batch_size: int = 10, seed: int = 0) -> tuple[pa.Table, RateReport]:
    if batch_size == 0:
        return unrated(cluster_ids)
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
    found: dict[int, _Rated] = {}
    for group, res in zip(groups, results, strict=True):
        got: dict[int, Rating] = {}
        if res.ok:
            for rating in Ratings.read(res.data).ratings:
                got.setdefault(rating.id, rating)
        rated: list[_Rated] = []
        scores: list[int] = []  # the rated ones' interest, as the LLM gave it
        for i, pos in enumerate(group, start=1):
            r = got.get(i)
            if r is None:
                status = f"failed: {res.reason or res.status}" if not res.ok else "failed: missing"
                found[pos] = {"status": status}
                report.fail(status.removeprefix("failed: "))
                continue
            row: _Rated = {"interest": r.interest, "reason": " ".join(r.reason.split()),
                                   "private": r.private,
                                   "private_reason": " ".join(r.private_reason.split()) or None,
                                   "status": "ok", "discarded": None}
            if row["private"] and not privacy_reason_names_data(row["private_reason"]):
                row["private"] = False
                row["discarded"] = "privacy flag: its reason names nothing private in the examples"
                report.private_discarded += 1
                report.discarded_example = report.discarded_example or row["private_reason"] or "(no reason given)"
            found[pos] = row
            rated.append(row)
            scores.append(r.interest)
        if (why := judge_batch(scores, [x["reason"] for x in rated])) is not None:
            report.uninformative_batches += 1
            report.unranked += len(rated)
            report.why_uninformative[why] = report.why_uninformative.get(why, 0) + 1
            for x in rated:  # kept for reading, not used to rank
                x["discarded"] = "; ".join(filter(None, [x["discarded"], f"rating: uninformative batch ({why})"]))
                x["interest"] = None
    rows: dict[str, list[Any]] = {n: [] for n in RATINGS_SCHEMA.names}
    for pos, cid in enumerate(cluster_ids):
        row = found[pos]
        rows["cluster_id"].append(int(cid))
        for name in RATINGS_SCHEMA.names[1:]:
            rows[name].append(row.get(name))
        report.rated += row["status"] == "ok"
        report.private += bool(row.get("private"))
    return pa.table(rows, schema=RATINGS_SCHEMA), report


class RateStage(Stage):
    """Clusters (label + most common members) → interest 1-100, a reason, a privacy flag."""

    name = "rate"
    version = STAGE_VERSION
    reads = (*MEMBER_ARTEFACTS, "labels.parquet")
    writes = ("ratings.parquet",)
    Config = RateConfig
    prompt = "rate"
    backends = ("llm",)

    def run(self, ctx: StageContext) -> StageResult:
        base, members = ClusterMembers.read(ctx)
        if ctx.config.rate_batch == 0:  # off: nothing sent (no engine, no model loaded)
            table, report = unrated(base.column("cluster_id").to_pylist())
            ctx.write_table("ratings.parquet", table)
            ctx.log("rate: off (rate batch 0): clusters get no interest rating and no privacy flag")
            return StageResult({"clusters": report.clusters, "rated": 0, "off": True})
        labels = ctx.read_table("labels.parquet").column("label").to_pylist()
        examples = [members.most_common(i, 5) for i in range(len(members))]
        table, report = rate_clusters(base.column("cluster_id").to_pylist(), base.column("kind").to_pylist(),
                                      labels, examples, ctx.engine, ctx.prompt,
                                      batch_size=ctx.config.rate_batch, seed=ctx.config.seed)
        ctx.write_table("ratings.parquet", table)
        return StageResult({"clusters": report.clusters, "batches": report.batches, "rated": report.rated,
                            "failed": report.failed, "private": report.private,
                            "uninformative_batches": report.uninformative_batches, "unranked": report.unranked,
                            "private_discarded": report.private_discarded, "notes": report.notes()},
                           complete=report.failed == 0)
