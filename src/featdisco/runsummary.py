"""What a run did and what it cost, computed once and rendered once.

A run directory is worked on by many invocations: a first run, resumed runs, reruns after a
config change, ``scan``, ``score-labels`` and ``hierarchy``. Every call each of them finishes
is written to the usage ledger in the run's LLM cache file as it completes (cache.py), so an
invocation stopped by Ctrl-C or kill -9 is counted too. :func:`run_totals` reads the ledger
(while a run is going on, too) and sums it: ``llm_totals`` (every invocation together),
``llm_last`` (the last one alone), the same per stage (``llm_by_stage``) and per analysis
(``llm_by_analysis``), and the models the replies named (``llm_models``). At the end of each
invocation :func:`record_invocation` writes the same figures into the manifest. A run made
before the ledger existed keeps what its manifest counted then, and the ledger adds to it.

Not every figure adds up over time: calls held back by a cost cap or budget are "not sent"
only until a later invocation sends them, so that count is the latest invocation's of each
stage or analysis, and clears once a rerun finishes the work. ``featdisco run``'s summary,
``featdisco status`` (and ``--json``) and the report's overview all print :func:`headline`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from featdisco.llm.cache import LedgerRow, read_ledger
from featdisco.rundir import LLM_CACHE, RunDir, StageCounts

STAGE_ORDER = ("read", "split", "featurize", "embed", "cluster", "name", "merge", "curate", "rate", "assemble")
_SUMMED = ("calls", "sent", "cached", "failed", "skipped_budget", "attempts", "input_tokens",
           "output_tokens", "invocations")


class Usage(TypedDict):
    """LLM use, summable: calls asked, sent to the provider, answered from the cache, failed
    (and why), held back by the cost cap, tokens, invocations, and USD (None: unknown price).
    Stored as such in the manifest (``llm_totals``, ``llm_by_stage``, ...)."""

    calls: int
    sent: int
    cached: int
    failed: int
    skipped_budget: int
    attempts: int
    input_tokens: int
    output_tokens: int
    invocations: int
    cost_usd: float | None
    failed_by_reason: dict[str, int]
    by: NotRequired[list[str]]  # llm_last only: what made the last invocation (run, scan, an analysis)


def usage(summary: Mapping[str, Any] | None) -> Usage:
    """An engine summary (``RunSummary.as_dict``) as summable usage: ``sent`` is what reached
    the provider (not answered from the cache, not held back by the cost cap)."""
    s = dict(summary or {})
    if "sent" not in s:
        unique = s.get("unique", s.get("calls", 0)) or 0
        s["sent"] = max(0, unique - (s.get("cached") or 0) - (s.get("skipped_budget") or 0))
    out = cast(Usage, {k: int(s.get(k) or 0) for k in _SUMMED})
    out["invocations"] = int(s.get("invocations", 1) if summary else 0)
    out["cost_usd"] = s.get("cost_usd", 0.0) if summary else 0.0
    out["failed_by_reason"] = dict(s.get("failed_by_reason") or {})
    return out


def add(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> Usage:
    """Two usages together; the cost is unknown once any part of it is."""
    x, y = usage(a) if a is not None else usage(None), usage(b) if b is not None else usage(None)
    out = cast(Usage, {k: x[k] + y[k] for k in _SUMMED})  # type: ignore[literal-required]
    out["cost_usd"] = None if x["cost_usd"] is None or y["cost_usd"] is None else x["cost_usd"] + y["cost_usd"]
    reasons = dict(x["failed_by_reason"])
    for k, v in y["failed_by_reason"].items():
        reasons[k] = reasons.get(k, 0) + v
    out["failed_by_reason"] = reasons
    return out


class InvocationFields(TypedDict, total=False):
    """The manifest keys :func:`record_invocation` writes."""

    prices: dict[str, object]  # the model's price per 1M tokens and its source
    llm_totals: Usage
    llm_last: Usage | None
    llm_by_stage: dict[str, Usage]
    llm_by_analysis: dict[str, Usage]
    llm_models: dict[str, int]


class BeforeLedger(TypedDict):
    """The manifest's ``llm_before_ledger``: what it counted before the run had a ledger."""

    totals: Usage
    by_stage: dict[str, Usage]
    by_analysis: dict[str, Usage]


class LedgerFields(TypedDict, total=False):
    """The manifest keys :func:`open_ledger` writes."""

    run_id: str
    llm_ledger: str | None  # the fitted run's cache file (a transform's ledger), None: the run's own
    llm_before_ledger: BeforeLedger


def record_invocation(run: RunDir, summary: Mapping[str, Any], *, stages: Mapping[str, Any] | None = None,
                      analysis: str | None = None, prices: Mapping[str, Any] | None = None) -> None:
    """Write the run's LLM use into the manifest at the end of an invocation: from the usage
    ledger when the run has one (every invocation, interrupted ones included), else by adding
    this invocation's ``summary`` to the manifest's figures. An invocation that asked nothing
    of the LLM leaves them as they were (``llm_last`` stays the last one that did)."""
    this = usage(summary)
    m = run.manifest
    fields: InvocationFields = {}
    if prices and this["calls"]:
        fields["prices"] = dict(prices)  # per 1M tokens, and their source (a --prices file or built in)
    ledger = ledger_usage(m, run.path)
    if ledger is not None:
        if ledger.total is not None:
            fields.update({"llm_totals": ledger.total, "llm_last": ledger.last, "llm_by_stage": ledger.by_stage,
                           "llm_by_analysis": ledger.by_analysis, "llm_models": ledger.models})
        if fields:
            run.update(**fields)
        return
    if this["calls"] == 0:
        return
    with run.transact() as m:  # read-modify-write: another command's totals are never lost
        prev = m.get("llm_totals")
        fields.update({"llm_totals": add(prev, this), "llm_last": this})
        if stages:
            by_stage = dict(m.get("llm_by_stage") or {})
            for name, delta in stages.items():
                if delta:
                    by_stage[name] = add(by_stage.get(name), delta)
            fields["llm_by_stage"] = by_stage
        if analysis:
            by_analysis = dict(m.get("llm_by_analysis") or {})
            by_analysis[analysis] = add(by_analysis.get(analysis), this)
            fields["llm_by_analysis"] = by_analysis
        m.update(fields)


# ---------------------------------------------------------------------- the usage ledger

ANALYSIS_SCOPE = "analysis:"  # ledger scopes of analyses; a stage's scope is its name


def ledger_path(manifest: Mapping[str, Any], run_path: str | Path) -> Path:
    """The cache file holding the run's ledger: its own, or the fitted run's for a transform."""
    return Path(manifest.get("llm_ledger") or Path(run_path) / LLM_CACHE)


def open_ledger(run: RunDir, cache_path: str | Path) -> tuple[str, float]:
    """The run's id in the ledger, and the USD its manifest counted that the ledger does not
    hold, written into the manifest on first use (the engine calls this before its first
    call, never in a dry run). A run from before the ledger, or one whose cache file was
    deleted, keeps its manifest's figures as a base the ledger adds to."""
    m = run.manifest
    fields: LedgerFields = {}
    run_id = m.get("run_id")
    if not isinstance(run_id, str):
        run_id = fields["run_id"] = uuid.uuid4().hex
    cache_path = Path(cache_path).resolve()
    own = (run.path / LLM_CACHE).resolve()
    if cache_path != own and m.get("llm_ledger") != str(cache_path):
        fields["llm_ledger"] = str(cache_path)
    elif cache_path == own and "llm_ledger" in m:
        fields["llm_ledger"] = None
    base = m.get("llm_before_ledger")
    if not read_ledger(cache_path, run_id) and m.get("llm_totals"):
        base = fields["llm_before_ledger"] = {
            "totals": m["llm_totals"], "by_stage": m.get("llm_by_stage") or {},
            "by_analysis": m.get("llm_by_analysis") or {}}
    if fields:
        run.update(**fields)
    cost = ((base or {}).get("totals") or {}).get("cost_usd") if base else None
    return run_id, float(cost or 0.0)


@dataclass(slots=True)
class LedgerUsage:
    total: Usage | None
    last: Usage | None
    by_stage: dict[str, Usage]
    by_analysis: dict[str, Usage]
    models: dict[str, int]  # the model each reply named → calls
    unattributed: Usage | None = None  # calls made outside any stage or analysis


def ledger_usage(manifest: Mapping[str, Any], run_path: str | Path) -> LedgerUsage | None:
    """The run's LLM use from its ledger (plus what the manifest counted before it), or
    None when the run has no ledger (made by an older featdisco, or never called an LLM)."""
    run_id = manifest.get("run_id")
    if not isinstance(run_id, str):
        return None
    rows = read_ledger(ledger_path(manifest, run_path), run_id)
    if rows is None:
        return None
    return summarise_ledger(rows, manifest.get("llm_before_ledger") or {}, set(manifest.get("stages") or {}))


# Commands that rerun pipeline stages besides `run` (an edit reruns name, merge, …): a stage's
# calls made under one of them are shown as made by it.
_STAGE_COMMANDS = ("edit", "transform")


def _stage_command(command: str) -> str:
    """Which command ran pipeline stages, from the ledger's ``featdisco <command>`` text."""
    words = command.split()
    return words[1] if len(words) > 1 and words[1] in _STAGE_COMMANDS else "run"


def summarise_ledger(rows: list[LedgerRow], base: Mapping[str, Any],
                     stages: set[str]) -> LedgerUsage:
    """Sum ledger rows into usages; "not sent" counts only the latest invocation of each scope."""
    by_scope: dict[str, Usage] = {}
    invocations: dict[int, Usage] = {}
    latest: dict[str, int] = {}  # scope -> its latest invocation
    skipped: dict[tuple[str, int], int] = {}
    models: dict[str, int] = {}
    for r in rows:
        part = _row_usage(r)
        by_scope[r.scope] = add(by_scope.get(r.scope), part)
        invocations[r.invocation] = add(invocations.get(r.invocation), part)
        latest[r.scope] = max(latest.get(r.scope, r.invocation), r.invocation)
        if r.status == "skipped":
            skipped[(r.scope, r.invocation)] = skipped.get((r.scope, r.invocation), 0) + r.n
        if r.model and r.status in ("ok", "failed"):
            models[r.model] = models.get(r.model, 0) + r.n
    scope_invocations: dict[str, set[int]] = {}
    for r in rows:
        scope_invocations.setdefault(r.scope, set()).add(r.invocation)
    for scope, u in by_scope.items():  # held back only until a later invocation sends them
        u["skipped_budget"] = skipped.get((scope, latest[scope]), 0)
        u["invocations"] = len(scope_invocations[scope])
    total = None
    for u in by_scope.values():
        total = add(total, u)
    if total is not None:
        total["invocations"] = len(invocations)
    base_total = base.get("totals")
    if base_total:
        total = add(base_total, total) if total is not None else usage(base_total)
        total["skipped_budget"] = sum(u["skipped_budget"] for u in by_scope.values())
    last = invocations[max(invocations)] if invocations else None
    if last is not None:
        last["invocations"] = 1
        # what made it: an invocation that asked nothing of the LLM leaves this one "last", so a
        # no-op `run` after `score-labels` must not seem to have had score-labels' failures
        newest = max(invocations)
        newest_rows = [r for r in rows if r.invocation == newest]
        rerun_by = _stage_command(newest_rows[0].command) if newest_rows else "run"
        last["by"] = sorted({r.scope[len(ANALYSIS_SCOPE):] if r.scope.startswith(ANALYSIS_SCOPE)
                             else rerun_by if (r.scope in stages or r.scope in STAGE_ORDER)
                             else r.scope or "other" for r in newest_rows})
    by_stage = {k: usage(v) for k, v in (base.get("by_stage") or {}).items()}
    by_analysis = {k: usage(v) for k, v in (base.get("by_analysis") or {}).items()}
    unattributed = None
    for scope, u in by_scope.items():
        if scope.startswith(ANALYSIS_SCOPE):
            name = scope[len(ANALYSIS_SCOPE):]
            by_analysis[name] = _merge_base(by_analysis.get(name), u)
        elif scope in stages or scope in STAGE_ORDER:
            by_stage[scope] = _merge_base(by_stage.get(scope), u)
        elif scope:
            by_analysis[scope] = _merge_base(by_analysis.get(scope), u)
        else:
            unattributed = u
    return LedgerUsage(total, last, by_stage, by_analysis, models, unattributed)


def _merge_base(base: Mapping[str, Any] | None, u: Usage) -> Usage:
    if base is None:
        return u
    out = add(base, u)
    out["skipped_budget"] = u["skipped_budget"]
    return out


def _row_usage(r: LedgerRow) -> Usage:
    sent = r.n if r.status in ("ok", "failed") else 0
    return {"calls": r.n, "sent": sent, "cached": r.n if r.status == "cached" else 0,
            "failed": r.n if r.status == "failed" else 0,
            "skipped_budget": r.n if r.status == "skipped" else 0, "attempts": r.attempts,
            "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "invocations": 1,
            "cost_usd": None if r.unpriced else r.cost,
            "failed_by_reason": {r.reason or "unknown": r.n} if r.status == "failed" else {}}


@dataclass(slots=True)
class StageRow:
    name: str
    state: str  # done / incomplete / not run
    seconds: float | None = None
    peak_rss_mib: float | None = None
    llm: Usage | None = None  # over every invocation
    counts: StageCounts = field(default_factory=dict)


class StageDoc(TypedDict):
    stage: str
    state: str
    seconds: float | None
    peak_rss_mib: float | None
    llm: Usage | None
    counts: StageCounts


class BudgetDoc(TypedDict):
    usd: float
    spent_usd: float | None
    left_usd: float


class TotalsDoc(TypedDict):
    """:class:`Totals` as ``featdisco status --json`` and the report's data print it."""

    stages: list[StageDoc]
    llm_totals: Usage | None
    llm_last: Usage | None
    llm_by_analysis: dict[str, Usage]
    llm_unattributed: dict[str, int] | None
    llm_models: dict[str, int]
    budget: BudgetDoc | None
    notes: list[str]


@dataclass(slots=True)
class Totals:
    """A run's stages and LLM use: ``total`` over every invocation, ``last`` the last one."""

    stages: list[StageRow]
    total: Usage | None
    last: Usage | None
    analyses: dict[str, Usage]
    notes: list[str] = field(default_factory=list)  # discarded ratings, hidden clusters, …
    models: dict[str, int] = field(default_factory=dict)  # as the replies named them → calls
    budget: float | None = None  # the run's --budget, USD over every invocation
    ledger: LedgerUsage | None = None  # what the totals were read from, when the run has a ledger

    @property
    def unattributed(self) -> dict[str, int] | None:
        """Use not in any finished stage or analysis (an interrupted stage's calls)."""
        if self.total is None:
            return None
        if self.ledger is not None:
            rest = self.ledger.unattributed
            return None if not rest else _io_tokens(rest)
        parts = [s.llm for s in self.stages if s.llm] + list(self.analyses.values())
        left = {k: v - sum(_io_tokens(p)[k] for p in parts) for k, v in _io_tokens(self.total).items()}
        return left if any(v > 0 for v in left.values()) else None

    def as_dict(self) -> TotalsDoc:
        return {"stages": [{"stage": s.name, "state": s.state, "seconds": s.seconds,
                            "peak_rss_mib": s.peak_rss_mib, "llm": s.llm, "counts": s.counts}
                           for s in self.stages],
                "llm_totals": self.total, "llm_last": self.last, "llm_by_analysis": self.analyses,
                "llm_unattributed": self.unattributed, "llm_models": self.models,
                "budget": None if self.budget is None else {
                    "usd": self.budget, "spent_usd": self.spent,
                    "left_usd": max(0.0, self.budget - (self.spent or 0.0))},
                "notes": self.notes}

    @property
    def spent(self) -> float | None:
        """USD spent over every invocation (None: some call had no known price)."""
        return None if self.total is None else self.total.get("cost_usd")


def _io_tokens(u: Usage) -> dict[str, int]:
    """Calls sent and tokens in and out: the figures a share of the use is told by."""
    return {"sent": u.get("sent", 0), "input_tokens": u.get("input_tokens", 0),
            "output_tokens": u.get("output_tokens", 0)}


def run_totals(manifest: Mapping[str, Any], run_path: str | Path | None = None) -> Totals:
    """The one totals computation every view of a run uses: from the usage ledger when
    ``run_path`` is given and the run has one (so an interrupted or running invocation is
    counted), else from the manifest's figures."""
    ledger = ledger_usage(manifest, run_path) if run_path is not None else None
    by_stage = ledger.by_stage if ledger is not None else (manifest.get("llm_by_stage") or {})
    records = manifest.get("stages") or {}
    names = [n for n in STAGE_ORDER if n in records] + [n for n in records if n not in STAGE_ORDER]
    rows = []
    for name in names:
        rec = records[name]
        if not isinstance(rec, dict):
            continue
        outputs_there = run_path is None or all((Path(run_path) / o).exists() for o in rec.get("outputs", []))
        llm = by_stage.get(name) or (usage(rec["llm"]) if rec.get("llm") else None)
        rows.append(StageRow(name, "done" if rec.get("complete", True) and outputs_there else "incomplete",
                             rec.get("seconds"), rec.get("peak_rss_mib") or None, llm, rec.get("counts") or {}))
    budget = manifest.get("budget_usd")
    budget = float(budget) if isinstance(budget, int | float) else None
    if ledger is not None and ledger.total is not None:
        for name, llm in ledger.by_stage.items():  # calls of a stage stopped before it first finished
            if name not in records:
                rows.append(StageRow(name, "incomplete", llm=llm))
        order = {n: i for i, n in enumerate(STAGE_ORDER)}
        rows.sort(key=lambda r: order.get(r.name, len(order)))
        return Totals(rows, ledger.total, ledger.last, ledger.by_analysis, notes=stage_notes(records),
                      models=ledger.models, budget=budget, ledger=ledger)
    total = manifest.get("llm_totals")
    last = manifest.get("llm_last")
    if total and "invocations" not in total:  # written before totals were kept: the last invocation
        total = last = usage(total)
    return Totals(rows, usage(total) if total else None, usage(last) if last else None,
                  {k: usage(v) for k, v in (manifest.get("llm_by_analysis") or {}).items()},
                  notes=stage_notes(records), models=dict(manifest.get("llm_models") or {}), budget=budget)


def stage_notes(records: Mapping[str, Any]) -> list[str]:
    """Lines a reader must not miss, from the stages' counts (what was discarded and why)."""
    notes: list[str] = []
    for name in STAGE_ORDER:
        rec = records.get(name)
        if isinstance(rec, dict):
            notes.extend(str(n) for n in (rec.get("counts") or {}).get("notes", []) or [])
    return notes


def cost_text(cost: float | None) -> str:
    if cost is None:
        return "unknown (no price for this model; --prices FILE adds one)"
    return f"${cost:.4f}"


def usage_text(u: Mapping[str, Any]) -> str:
    reasons = u.get("failed_by_reason") or {}
    why = f" ({', '.join(f'{k} {v:,}' for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))})" if reasons else ""
    capped = f", {u['skipped_budget']:,} not sent: a cost limit (--max-cost or --budget) reached" if u.get("skipped_budget") else ""
    return (f"{u.get('sent', 0):,} calls sent, {u.get('cached', 0):,} answered from the cache, "
            f"{u.get('failed', 0):,} failed{why}{capped}; {u.get('input_tokens', 0):,} in / "
            f"{u.get('output_tokens', 0):,} out tokens; cost {cost_text(u.get('cost_usd'))}")


def headline(t: Totals) -> list[str]:
    """The run's LLM use in words: every invocation together, then the last one."""
    if t.total is None:
        return ["LLM: no calls made in this run"]
    n = t.total.get("invocations", 1)
    lines = [f"LLM, all {n} invocation{'s' if n != 1 else ''}: {usage_text(t.total)}"]
    # the "of which" lines break the total down, so they follow it, not the last invocation's line
    if t.analyses:
        lines.append("of which analyses: " + "; ".join(f"{k} {v['sent']:,} sent" for k, v in t.analyses.items()))
    if (rest := t.unattributed) is not None:
        lines.append(f"of which not in a stage or analysis: {rest['sent']:,} calls sent")
    if n > 1 and t.last is not None:
        by = f" (made by: {', '.join(t.last['by'])})" if t.last.get("by") else ""
        lines.append(f"LLM, last invocation: {usage_text(t.last)}{by}")
    if t.models:
        lines.append("LLM replies came from: " + ", ".join(
            f"{m} ({n:,} call{'s' if n != 1 else ''})" for m, n in sorted(t.models.items(), key=lambda kv: -kv[1])))
    if t.budget is not None:
        spent = t.spent or 0.0
        share = f" ({spent / t.budget:.0%})" if t.budget > 0 else ""
        lines.append(f"budget: ${spent:.4f} of ${t.budget:g} spent{share} over every invocation; "
                     f"${max(0.0, t.budget - spent):.4f} left (--budget USD changes it)")
    return lines


StageCells = TypedDict("StageCells", {
    "stage": str, "state": str, "seconds": NotRequired[str | None], "peak MiB": NotRequired[int | None],
    "calls": NotRequired[int | None], "tokens": NotRequired[int | None], "cost": NotRequired[str | None],
    "counts": NotRequired[str]})
"""A stage's row of the stage table (the views add rows of stages not run: stage and state)."""


def stage_cells(row: StageRow) -> StageCells:
    """One stage as the table cells every view prints (``None``: nothing to show)."""
    llm = row.llm
    cost = None if not llm else llm.get("cost_usd")
    return {"stage": row.name, "state": row.state,
            "seconds": None if row.seconds is None else f"{row.seconds:.1f}",
            "peak MiB": None if not row.peak_rss_mib else round(row.peak_rss_mib),
            "calls": llm.get("sent") if llm else None,
            "tokens": (llm.get("input_tokens", 0) + llm.get("output_tokens", 0)) if llm else None,
            "cost": None if not llm else ("unknown" if cost is None else f"${cost:.4f}"),
            "counts": short_counts(row.counts)}


def short_counts(counts: Mapping[str, Any]) -> str:
    """``{"features": 106, "dropped": {"duplicate": 17}}`` → ``features 106; dropped: duplicate 17``."""
    parts = []
    for key, value in counts.items():
        if key == "notes":
            continue
        if isinstance(value, dict):
            if value:
                parts.append(f"{key}: " + ", ".join(_num(k, v) for k, v in value.items()))
        elif value not in (0, None) or key == "failed":
            parts.append(_num(key, value))
    return "; ".join(parts)


def _num(key: str, v: Any) -> str:
    return f"{key} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{key} {v}"
