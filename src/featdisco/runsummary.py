"""What a run did and what it cost, computed once and rendered once.

A run directory is worked on by many invocations: a first run, resumed runs, reruns after a
config change, ``score-labels`` and ``hierarchy``. Each records its LLM use here
(:func:`record_invocation`): the manifest keeps ``llm_totals`` (every invocation together),
``llm_last`` (the last one alone) and the same per stage (``llm_by_stage``) and per analysis
(``llm_by_analysis``), so that the headline and the stage table add up. ``featdisco run``'s
summary, ``featdisco status`` (and ``--json``) and the report's overview all read
:func:`run_totals` and print :func:`headline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featdisco.rundir import RunDir

STAGE_ORDER = ("read", "split", "featurize", "embed", "cluster", "name", "rate", "assemble")
_SUMMED = ("calls", "sent", "cached", "failed", "skipped_budget", "attempts", "input_tokens",
           "output_tokens", "invocations")


def usage(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """An engine summary (``RunSummary.as_dict``) as summable usage: ``sent`` is what reached
    the provider (not answered from the cache, not held back by the cost cap)."""
    s = dict(summary or {})
    if "sent" not in s:
        unique = s.get("unique", s.get("calls", 0)) or 0
        s["sent"] = max(0, unique - (s.get("cached") or 0) - (s.get("skipped_budget") or 0))
    out: dict[str, Any] = {k: int(s.get(k) or 0) for k in _SUMMED}
    out["invocations"] = int(s.get("invocations", 1) if summary else 0)
    out["cost_usd"] = s.get("cost_usd", 0.0) if summary else 0.0
    out["failed_by_reason"] = dict(s.get("failed_by_reason") or {})
    return out


def add(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """Two usages together; the cost is unknown once any part of it is."""
    x, y = usage(a) if a is not None else usage(None), usage(b) if b is not None else usage(None)
    out = {k: x[k] + y[k] for k in _SUMMED}
    out["cost_usd"] = None if x["cost_usd"] is None or y["cost_usd"] is None else x["cost_usd"] + y["cost_usd"]
    reasons = dict(x["failed_by_reason"])
    for k, v in y["failed_by_reason"].items():
        reasons[k] = reasons.get(k, 0) + v
    out["failed_by_reason"] = reasons
    return out


def record_invocation(run: RunDir, summary: Mapping[str, Any], *, stages: Mapping[str, Any] | None = None,
                      analysis: str | None = None, prices: Mapping[str, Any] | None = None) -> None:
    """Add one invocation's LLM use to the manifest. An invocation that asked nothing of the
    LLM leaves the totals as they were (``llm_last`` stays the last one that did)."""
    this = usage(summary)
    if this["calls"] == 0:
        return
    with run.transact() as m:  # read-modify-write: another command's totals are never lost
        prev = m.get("llm_totals")
        fields: dict[str, Any] = {"llm_totals": add(prev, this), "llm_last": this}
        if prices:
            fields["prices"] = dict(prices)  # per 1M tokens, and their source (a --prices file or built in)
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


@dataclass(slots=True)
class StageRow:
    name: str
    state: str  # done / incomplete / not run
    seconds: float | None = None
    peak_rss_mib: float | None = None
    llm: dict[str, Any] | None = None  # over every invocation
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Totals:
    """A run's stages and LLM use: ``total`` over every invocation, ``last`` the last one."""

    stages: list[StageRow]
    total: dict[str, Any] | None
    last: dict[str, Any] | None
    analyses: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)  # discarded ratings, hidden clusters, …

    @property
    def unattributed(self) -> dict[str, Any] | None:
        """Use not in any finished stage or analysis (an interrupted stage's calls)."""
        if self.total is None:
            return None
        parts = [s.llm for s in self.stages if s.llm] + list(self.analyses.values())
        rest = {k: self.total[k] - sum(p.get(k, 0) for p in parts) for k in ("sent", "input_tokens",
                                                                          "output_tokens")}
        return rest if any(v > 0 for v in rest.values()) else None

    def as_dict(self) -> dict[str, Any]:
        return {"stages": [{"stage": s.name, "state": s.state, "seconds": s.seconds,
                            "peak_rss_mib": s.peak_rss_mib, "llm": s.llm, "counts": s.counts}
                           for s in self.stages],
                "llm_totals": self.total, "llm_last": self.last, "llm_by_analysis": self.analyses,
                "llm_unattributed": self.unattributed, "notes": self.notes}


def run_totals(manifest: Mapping[str, Any], run_path: str | Path | None = None) -> Totals:
    """The one totals computation every view of a run uses."""
    by_stage = manifest.get("llm_by_stage") or {}
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
    total = manifest.get("llm_totals")
    last = manifest.get("llm_last")
    if total and "invocations" not in total:  # written before totals were kept: the last invocation
        total = last = usage(total)
    return Totals(rows, usage(total) if total else None, usage(last) if last else None,
                  {k: usage(v) for k, v in (manifest.get("llm_by_analysis") or {}).items()},
                  notes=stage_notes(records))


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
    capped = f", {u['skipped_budget']:,} not sent: cost cap reached" if u.get("skipped_budget") else ""
    return (f"{u.get('sent', 0):,} calls sent, {u.get('cached', 0):,} answered from the cache, "
            f"{u.get('failed', 0):,} failed{why}{capped}; {u.get('input_tokens', 0):,} in / "
            f"{u.get('output_tokens', 0):,} out tokens; cost {cost_text(u.get('cost_usd'))}")


def headline(t: Totals) -> list[str]:
    """The run's LLM use in words: every invocation together, then the last one."""
    if t.total is None:
        return ["LLM: no calls made in this run"]
    n = t.total.get("invocations", 1)
    lines = [f"LLM, all {n} invocation{'s' if n != 1 else ''}: {usage_text(t.total)}"]
    if n > 1 and t.last is not None:
        lines.append(f"LLM, last invocation: {usage_text(t.last)}")
    if t.analyses:
        lines.append("of which analyses: " + "; ".join(f"{k} {v['sent']:,} sent" for k, v in t.analyses.items()))
    if (rest := t.unattributed) is not None:
        lines.append(f"of which not in a finished stage (interrupted): {rest['sent']:,} calls sent")
    return lines


def stage_cells(row: StageRow) -> dict[str, Any]:
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
