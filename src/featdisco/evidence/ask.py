"""``featdisco ask RUN "question"``: a question answered by a plan of featdisco's own tools.

A researcher's question ("which model apologises more?") is rarely one cluster's label. The
LLM reads the dictionary (labels, sizes, per-group rates) and writes a plan of at most
:data:`~featdisco.llm.replies.ASK_MAX_STEPS` steps drawn from the tools that exist (``find``,
``scan``, ``compare``, ``cooccur``); featdisco checks the plan (tool arguments, grouping
columns, a scan's sample capped; one re-ask with the problems when it is unusable), runs
each step with the existing functions, through the run's engine and cache and within one
``max_cost``, and asks for an answer from the steps' outputs.

The answer is checked, not trusted: a citation (a quote attributed to a piece id) is kept
only when the quote is found in that piece's text (:func:`featdisco.quotes.check_quote`);
otherwise it is dropped and counted, never shown as evidence. Every number in the answer's
text is matched against the numbers the steps printed; those that match none are flagged.

Outputs in the run directory: ``ask_<name>.json`` (question, plan, each step's arguments,
table and evidence, the answer, its checked citations and numbers, provenance),
``analysis_ask_<name>.parquet`` (the same as rows, for the report's analysis pages, with
the question and answer in its metadata), ``analysis_ask_<name>_step<i>.parquet`` (each
step's table) and an ``asks`` entry in the manifest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.evidence.scan import DEFAULT_PROMPT_VERSION as SCAN_PROMPT_VERSION
from featdisco.llm.base import ChatMessage, LLMRequest, Sampling
from featdisco.llm.replies import ASK_MAX_STEPS, AskAnswer, AskPlan, AskStep, Citation, Reply
from featdisco.llm.summary import LLMUse
from featdisco.prompts import load_prompt
from featdisco.quotes import check_quote
from featdisco.rundir import RunDir, open_run, versions

if TYPE_CHECKING:
    from featdisco.analysis.llm import LLMChoice
    from featdisco.pipeline import Pipeline

DEFAULT_SAMPLE = 200  # a scan step's pieces when the plan gives none, and the cap (--max-sample)
DEFAULT_TOP = 10
DICTIONARY_CLUSTERS = 40  # clusters shown to the planner, largest first
EVIDENCE_PER_GROUP = 4  # verified quotes per group a scan step offers the answer
MAX_GROUPS = 12  # a column with more values is not offered as a grouping column
TOOLS_TEXT = {
    "find": "find: rank clusters by meaning for a topic. Fields: query (the topic), kind (optional), top.",
    "scan": "scan: ask one yes/no question of sampled pieces; prevalence overall and per group with 95% "
            "intervals and tests, and verified quotes. Fields: query (the question, e.g. \"Does the response "
            "apologise?\"), kind (optional, e.g. response), by (optional grouping column), sample (pieces).",
    "compare": "compare: the rate of every cluster per group of a column, the most different first, with "
               "tests and Benjamini-Hochberg q-values. Fields: by (a grouping column), top.",
    "cooccur": "cooccur: cluster pairs that occur together more than chance. Fields: level (piece or "
               "transcript), top.",
}
# a number standing alone ("40.0%", "-2.5", "1.2e-06", "1,234"), not one inside a name ("gpt-4o")
_NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?%?(?![\w])")
_CITE = re.compile(r"\[[^\]]*\]")  # "[a12:1:response]": a piece id in the text, not a number
_STEP_REF = re.compile(r"\b(?:step|steps)\s+\d+", re.IGNORECASE)
_SLUG = re.compile(r"[^a-z0-9]+")


class Evidence(TypedDict):
    """A verified quote a scan step offers the answer."""

    piece_id: str
    group: str
    quote: str


class CheckedCitation(TypedDict):
    """A citation whose quote was found in its piece, at ``start:end``."""

    piece_id: str
    quote: str
    start: int
    end: int


class DroppedCitation(TypedDict):
    """A citation that did not verify, and why."""

    piece_id: str
    quote: str
    why: str


class Provenance(TypedDict):
    """What ``ask_<name>.json`` records of how the answer was made."""

    llm: str
    model: str
    prompts: dict[str, str]
    created: str
    versions: dict[str, str]
    max_cost: float | None
    max_sample: int
    seed: int


class _Row(TypedDict):
    """A row of ``analysis_ask_<name>.parquet``."""

    part: str
    step: int | None
    tool: str | None
    text: str
    detail: str
    piece_id: str | None
    verified: bool | None


@dataclass(slots=True)
class StepResult:
    """One step as run: its arguments after checking, its table, the quotes it offers and
    the text the answer was shown."""

    index: int
    step: AskStep  # as checked: defaults filled, the sample capped
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    evidence: list[Evidence] = field(default_factory=list)
    text: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    llm: LLMUse | None = None  # a scan step's LLM use


@dataclass(slots=True)
class AskResult:
    name: str
    question: str
    plan: list[AskStep]
    steps: list[StepResult]
    answer: str = ""
    citations: list[CheckedCitation] = field(default_factory=list)  # verified: shown as evidence
    dropped: list[DroppedCitation] = field(default_factory=list)  # did not verify: counted, not shown
    numbers_matched: list[str] = field(default_factory=list)
    numbers_unmatched: list[str] = field(default_factory=list)
    plan_problems: list[str] = field(default_factory=list)  # of the first plan, when it was re-asked
    incomplete: list[str] = field(default_factory=list)  # why the answer is partial (exit 3)
    unsupported: str = ""  # why nothing from the steps backs the answer ("" when something does)
    llm: LLMUse | None = None
    paths: list[Path] = field(default_factory=list)


def ask_name(question: str) -> str:
    return "_".join(_SLUG.sub(" ", question.lower()).split())[:40].strip("_") or "question"


def free_ask_name(run_dir: Path, question: str) -> str:
    """:func:`ask_name`, unless the run holds an ask of another question under it (alike in
    its first 40 characters): then with a digest of the question, so it replaces nothing."""
    from featdisco.analysis.provenance import unclaimed_name

    name = ask_name(question)
    manifest = RunDir(run_dir).manifest if (run_dir / "manifest.json").exists() else {}
    held = ((manifest.get("asks") or {}).get(name) or {}).get("question")
    return unclaimed_name(name, held, question, keep=33)


# ----------------------------------------------------------------------------- context

@dataclass(slots=True)
class Context:
    """What the planner is shown and what a plan is checked against."""

    dictionary: str
    n_clusters: int
    columns: dict[str, list[str]]  # grouping column -> its values
    tools: tuple[str, ...]
    group_note: str
    hidden: frozenset[int] = frozenset()  # private, rare or hidden clusters: never shown to the LLM
    wide: dict[str, int] = field(default_factory=dict)  # columns left out for too many values -> their count
    piece_kinds: frozenset[str] = frozenset()  # the kinds of piece the run has (empty: not known)


def grouping_columns(act: Any, wide: dict[str, int] | None = None) -> dict[str, list[str]]:
    """Piece columns and metadata keys with 2..MAX_GROUPS values: what ``by`` may name. Those
    with more values are put in ``wide`` with their count, so a plan naming one is told why."""
    candidates = [c for c in ("model", "source", "format") if c in act.pieces.columns]
    if "metadata" in act.pieces.columns:
        keys: set[str] = set()
        for raw in act.pieces["metadata"].head(2000):
            meta = raw if isinstance(raw, dict) else json.loads(raw) if isinstance(raw, str) and raw else {}
            if isinstance(meta, dict):
                keys.update(k for k, v in meta.items() if isinstance(v, str | int | bool))
        candidates += sorted(keys - set(candidates))
    out: dict[str, list[str]] = {}
    for c in candidates:
        try:
            values = act.column(c).dropna()
        except FeatdiscoError:
            continue
        distinct = sorted({str(v) for v in values})
        if 2 <= len(distinct) <= MAX_GROUPS:
            out[c] = distinct
        elif len(distinct) > MAX_GROUPS and wide is not None:
            wide[c] = len(distinct)
    return out


def build_context(run_dir: Path, show_private: bool = False) -> Context:
    from featdisco.analysis.activations import load_activations
    from featdisco.analysis.compare import compare_groups
    from featdisco.analysis.visibility import visibility

    hidden = visibility(run_dir, show_private=show_private).hidden
    act = load_activations(run_dir)
    wide: dict[str, int] = {}
    columns = grouping_columns(act, wide)
    sizes = np.asarray(act.piece_matrix.getnnz(axis=0))
    kinds = act.pieces["kind"].value_counts().to_dict()
    rates: dict[int, dict[str, float]] = {}
    group_note = ""
    if columns:
        by = "model" if "model" in columns else next(iter(columns))
        try:
            _, long = compare_groups(act, by)
            for r in long.itertuples():
                rates.setdefault(int(r.cluster_id), {})[str(r.group)] = float(r.rate)
            group_note = f", and per {by}"
        except FeatdiscoError:
            pass
    live = act.clusters["kind"].notna().to_numpy()  # ids retired by edits are empty columns, not clusters
    order = [c for c in np.argsort(-sizes, kind="stable") if live[c] and int(c) not in hidden][:DICTIONARY_CLUSTERS]
    lines = []
    for cid in order:
        row = act.clusters.iloc[int(cid)]
        share = sizes[cid] / max(1, kinds.get(row["kind"], 0))
        per = "; ".join(f"{g} {_pct(v)}" for g, v in rates.get(int(cid), {}).items())
        lines.append(f"- cluster {int(cid)} [{row['kind']}] {row['label']}: {int(sizes[cid])} pieces "
                     f"({_pct(share)})" + (f"; {per}" if per else ""))
    tools: tuple[str, ...] = ("find", "scan", "compare", "cooccur")
    if not (RunDir(run_dir).file("embeddings.npy").exists() and RunDir(run_dir).file("strings.parquet").exists()):
        tools = ("scan", "compare", "cooccur")  # find embeds the query beside the run's strings
    return Context("\n".join(lines), act.n_clusters - len(hidden), columns, tools, group_note, hidden, wide,
                   frozenset(str(k) for k, n in kinds.items() if n))


# ----------------------------------------------------------------------------- the plan

def check_plan(plan: AskPlan, ctx: Context, max_sample: int) -> tuple[list[AskStep], list[str]]:
    """The plan's steps with defaults filled and the sample capped, and its problems (each a
    sentence naming the step), which make the planner re-ask once."""
    steps: list[AskStep] = []
    problems: list[str] = []
    for i, s in enumerate(plan.steps, 1):
        filled: dict[str, object] = {"top": s.top or DEFAULT_TOP}
        where = f"step {i} ({s.tool})"
        if s.tool not in ctx.tools:
            problems.append(f"{where}: this run has no embeddings to find clusters with; use "
                            + ", ".join(ctx.tools))
        if s.tool in ("find", "scan") and not s.query.strip():
            problems.append(f"{where}: query is empty; give the " + ("topic" if s.tool == "find" else "question"))
        if s.tool == "compare" and not s.by:
            problems.append(f"{where}: by is empty; give one of " + (", ".join(ctx.columns) or "(none)"))
        if s.by and s.tool in ("compare", "scan") and s.by not in ctx.columns:
            why = (f"has {ctx.wide[s.by]} values, more than ask groups by ({MAX_GROUPS}); "
                   f"`featdisco {s.tool} --by {s.by}` takes it" if s.by in ctx.wide else "is not a grouping column")
            problems.append(f"{where}: by {s.by!r} {why}; use one of "
                            + (", ".join(ctx.columns) or "(none: leave by empty)"))
        if s.by and s.tool in ("find", "cooccur"):  # the planner meant rates per group: it would get none
            problems.append(f"{where}: {s.tool} does not group, so by {s.by!r} would be ignored; to measure "
                            f"a behaviour per {s.by}, scan it (or compare) with by {s.by!r}, or leave by empty")
        if s.kind and s.tool in ("find", "scan") and ctx.piece_kinds and s.kind not in ctx.piece_kinds:
            problems.append(f"{where}: kind {s.kind!r}: this run has no {s.kind} pieces; use one of "
                            + ", ".join(k for k in ("user", "thought", "response") if k in ctx.piece_kinds)
                            + " or leave it empty")
        if s.tool == "scan":
            filled["sample"] = min(s.sample or max_sample, max_sample)
        if s.tool == "cooccur":
            filled["level"] = s.level or "piece"
        steps.append(s.model_copy(update=filled))
    return steps, problems


def plan_request(question: str, ctx: Context) -> LLMRequest:
    prompt = load_prompt("ask_plan")
    msgs = prompt.render(question=question, dictionary=ctx.dictionary or "(no clusters)",
                         n_clusters=ctx.n_clusters, group_note=ctx.group_note, max_steps=ASK_MAX_STEPS,
                         columns=", ".join(f"{c} ({', '.join(v)})" for c, v in ctx.columns.items()) or "(none)",
                         tools="\n".join("- " + TOOLS_TEXT[t] for t in ctx.tools))
    return LLMRequest(msgs, schema=AskPlan.json_schema(), schema_name=AskPlan.schema_name,
                      sampling=Sampling(temperature=0.0, max_tokens=1200), prompt_version=prompt.version)


def replan_request(first: LLMRequest, reply: Mapping[str, object], problems: list[str]) -> LLMRequest:
    """The one re-ask of an unusable plan: the plan, what is wrong with it, and the schema."""
    ask = ("Your plan cannot be run: " + "; ".join(problems) + ". Reply again with a corrected plan, "
           "only a JSON value that conforms to this JSON Schema:\n" + json.dumps(first.schema, sort_keys=True))
    msgs = (*first.messages, ChatMessage("assistant", json.dumps(reply)), ChatMessage("user", ask))
    return LLMRequest(msgs, first.schema, first.schema_name, first.sampling, first.prompt_version)


# ----------------------------------------------------------------------------- the steps

def _pct(x: float) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not math.isfinite(float(v)):
            return "-"
        return f"{float(v):.3g}" if abs(float(v)) < 0.001 and v != 0 else f"{float(v):.3f}".rstrip("0").rstrip(".")
    return "-" if v is None else " ".join(str(v).split())


def table_text(df: pd.DataFrame) -> str:
    """A step's table as the answer sees it: tab-separated, rates also as percentages."""
    if df.empty:
        return "(no rows)"
    cols = list(df.columns)
    lines = ["\t".join(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, r, strict=True):
            rate = (c == "rate" or c.startswith("rate_") or c.startswith("ci_") or c == "prevalence")
            cells.append(_pct(float(v)) if rate and isinstance(v, float | np.floating) else _fmt(v))
        lines.append("\t".join(cells))
    return "\n".join(lines)


def run_step(run_dir: Path, i: int, step: AskStep, name: str, *, budget: float | None,
             seed: int, llm_options: LLMChoice, log: Any, hidden: frozenset[int] = frozenset()) -> StepResult:
    """Run one checked step with the existing function of its tool; an error becomes the
    step's error (shown to the answer), not the end of the analysis."""
    out = StepResult(i, step)
    try:
        if step.tool == "find":
            from featdisco.evidence.find import find_clusters

            df = find_clusters(run_dir, step.query, top=step.top,
                               kinds=[step.kind] if step.kind else None, hidden=hidden)
            out.table = df[["rank", "cluster_id", "kind", "label", "score", "pieces", "prevalence"]]
        elif step.tool == "compare":
            from featdisco.analysis.compare import run_compare

            df = run_compare(run_dir, step.by, write=False)
            df = df[~df["cluster_id"].isin(hidden)].head(step.top)
            keep = ["cluster_id", "kind", "label", "group_high", "count_high", "n_high", "rate_high",
                    "group_low", "count_low", "n_low", "rate_low", "p_value", "q_value", "significant"]
            out.table = df[[c for c in keep if c in df.columns]].reset_index(drop=True)
        elif step.tool == "cooccur":
            from featdisco.analysis.cooccurrence import run_cooccurrence

            df = run_cooccurrence(run_dir, levels=(step.level,), write=False)
            if not df.empty:
                df = df[~(df["cluster_a"].isin(hidden) | df["cluster_b"].isin(hidden))]
            df = df.head(step.top)
            keep = ["level", "cluster_a", "label_a", "cluster_b", "label_b", "together", "expected", "lift",
                    "npmi", "q_value"]
            out.table = df[[c for c in keep if c in df.columns]].reset_index(drop=True)
        else:
            _scan_step(run_dir, out, name, budget, seed, llm_options, log)
    except FeatdiscoError as e:
        out.error = str(e)
    out.text = step_text(out)
    return out


def _scan_step(run_dir: Path, out: StepResult, name: str, budget: float | None, seed: int,
               llm_options: LLMChoice, log: Any) -> None:
    from featdisco.evidence.scan import run_scan

    s = out.step
    if budget is not None and budget <= 0:
        out.error = "not run: the --max-cost cap was reached before this step"
        return
    res = run_scan(run_dir, s.query, kinds=[s.kind] if s.kind else None, name=f"ask_{name}_{out.index}",
                   by=s.by or None, sample=s.sample, seed=seed, max_cost=budget, log=log, **llm_options)
    out.llm = res.llm
    overall = pd.DataFrame([{"group": "(all)", "n": res.n, "positives": res.positives, "rate": res.rate,
                             "ci_low": res.ci_low, "ci_high": res.ci_high}])
    if res.by is not None:
        by = res.by[["group", "n", "positives", "rate", "ci_low", "ci_high", "p_value", "q_value"]]
        out.table = pd.concat([by, overall], ignore_index=True)
    else:
        out.table = overall
    if res.not_sent:
        out.notes.append(f"{res.not_sent} pieces not sent at the cost cap")
    if res.failed:
        out.notes.append(f"{res.failed} pieces failed")
    if res.unverified:
        out.notes.append(f"{res.unverified} yes-answers' quotes not found in their piece (not offered)")
    rows = res.table.to_pandas()
    if s.by:
        from featdisco.evidence.scan import select_pieces

        groups = select_pieces(RunDir(run_dir), [s.kind] if s.kind else None, s.sample, seed, s.by)
        rows["group"] = groups["group"].astype(str).to_numpy()
    else:
        rows["group"] = "(all)"
    from featdisco.evidence.scan import AnswerSpec

    spec = AnswerSpec()
    hits = rows[(rows["status"] == "ok") & rows["answer"].map(spec.positive) & (rows["verified"] == True)]  # noqa: E712
    texts = piece_texts(RunDir(run_dir), hits["piece_id"].tolist())
    for _, g in hits.groupby("group", sort=True):  # a random few, not the first: no pick of the best
        for r in g.sample(min(len(g), EVIDENCE_PER_GROUP), random_state=seed).sort_index().itertuples():
            # the piece's own words at the verified span, as the answer will be held to them
            span, text = r.span, texts.get(r.piece_id)
            quote = text[span["start"]:span["end"]] if isinstance(span, dict) and text is not None else r.quote
            out.evidence.append(Evidence(piece_id=r.piece_id, group=r.group, quote=quote))


def step_text(r: StepResult) -> str:
    s = r.step
    args = ", ".join(f"{k}={getattr(s, k)!r}" for k in ("query", "by", "kind", "level", "sample", "top")
                     if getattr(s, k) not in ("", 0, None) and _uses(s.tool, k))
    head = f"Step {r.index}: {s.tool}({args}) - {s.purpose}"
    if r.error:
        return f"{head}\nFAILED: {r.error}"
    body = [head, table_text(r.table)]
    body += [f"Note: {n}" for n in r.notes]
    if r.evidence:
        body.append("Evidence (piece id, group, verified quote):")
        body += [f"[{e['piece_id']}] {e['group']}: \"{e['quote']}\"" for e in r.evidence]
    return "\n".join(body)


def _uses(tool: str, arg: str) -> bool:
    return arg in {"find": ("query", "kind", "top"), "scan": ("query", "by", "kind", "sample"),
                   "compare": ("by", "top"), "cooccur": ("level", "top")}[tool]


# ----------------------------------------------------------------------------- the answer

def _numbers(text: str) -> list[str]:
    text = _STEP_REF.sub(" ", _CITE.sub(" ", text))
    return [m.group(0) for m in _NUMBER.finditer(text)]


def _value(token: str) -> tuple[float, int]:
    """A number token's value (percent as written) and its decimals."""
    t = token.rstrip("%").replace(",", "")
    decimals = len(t.split(".")[1]) if "." in t and "e" not in t.lower() else 0
    return float(t), decimals


def check_numbers(answer: str, steps_text: str) -> tuple[list[str], list[str]]:
    """(numbers of the answer found in the steps' outputs, those not found). A number
    matches a step's number at the answer's precision, as written or as a fraction/percent
    of it (30% for a rate shown as 30.0%, 0.3 or 30)."""
    known = [_value(t)[0] for t in _numbers(steps_text)]
    matched: list[str] = []
    unmatched: list[str] = []
    for tok in _numbers(answer):
        x, d = _value(tok)
        tol = 0.5 * 10 ** -d + 1e-9
        ok = any(abs(k - x) <= tol or abs(k * 100 - x) <= tol or abs(k / 100 - x) <= tol for k in known)
        (matched if ok else unmatched).append(tok)
    return matched, unmatched


def piece_texts(run: RunDir, piece_ids: Sequence[str]) -> dict[str, str]:
    """The text of each of these pieces that the run has."""
    ids = sorted(set(piece_ids))
    if not ids:
        return {}
    import pyarrow.compute as pc

    t = pq.read_table(run.file("pieces.parquet"), columns=["piece_id", "text"],
                      filters=pc.field("piece_id").isin(ids))
    return dict(zip(t.column("piece_id").to_pylist(), t.column("text").to_pylist(), strict=True))


def check_citations(run: RunDir, citations: Sequence[Citation]) -> tuple[list[CheckedCitation], list[DroppedCitation]]:
    """(citations whose quote is in their piece, with its span; the others, with why). A kept
    citation's ``quote`` is the piece's own words at that span, not the LLM's copy of them:
    the check forgives case, spacing and typographic marks, evidence shown must not."""
    texts = piece_texts(run, [c.piece_id for c in citations])
    kept: list[CheckedCitation] = []
    dropped: list[DroppedCitation] = []
    for c in citations:
        text = texts.get(c.piece_id)
        if text is None:
            dropped.append(DroppedCitation(piece_id=c.piece_id, quote=c.quote, why="no piece with this id"))
            continue
        chk = check_quote(c.quote, str(text))
        if chk.verified and chk.span is not None:
            kept.append(CheckedCitation(piece_id=c.piece_id, quote=str(text)[chk.span.start:chk.span.end],
                                        start=chk.span.start, end=chk.span.end))
        else:
            dropped.append(DroppedCitation(piece_id=c.piece_id, quote=c.quote, why="quote not found in the piece"))
    return kept, dropped


# ----------------------------------------------------------------------------- the whole

def run_ask(run_dir: str | Path, question: str, *, name: str | None = None, max_cost: float | None = None,
            max_sample: int = DEFAULT_SAMPLE, seed: int = 0, show_private: bool = False, llm: str | None = None, model: str | None = None,
            base_url: str | None = None, concurrency: int | None = None, prices: str | None = None,
            log: Any = None) -> AskResult:
    """Plan, run the steps, answer and check the answer; writes the outputs (see the module).
    Holds the run's lock throughout: a second writer stops before anything is spent."""
    from featdisco.evidence.scan import check_name

    run_dir = Path(run_dir)
    if not question.strip():
        raise FeatdiscoError("the question is empty")
    if max_sample < 1:
        raise FeatdiscoError("--max-sample must be at least 1")
    name = check_name(name) if name else None
    with open_run(run_dir, write=True):
        name = name or free_ask_name(run_dir, question)
        return _ask_locked(run_dir, question, name, max_cost=max_cost, max_sample=max_sample, seed=seed,
                           show_private=show_private, llm=llm, model=model, base_url=base_url,
                           concurrency=concurrency, prices=prices, log=log)


def _ask_locked(run_dir: Path, question: str, name: str, *, max_cost: float | None, max_sample: int, seed: int,
                show_private: bool, llm: str | None, model: str | None, base_url: str | None,
                concurrency: int | None, prices: str | None, log: Any) -> AskResult:
    from featdisco.analysis.llm import LLMChoice, close_pipeline, open_pipeline

    run = RunDir(run_dir)
    for f in ("pieces.parquet", "clusters.parquet", "assignments.parquet"):
        if not run.file(f).exists():
            raise FeatdiscoError(f"{run_dir} has no {f}: ask needs a finished run (`featdisco run`)")
    ctx = build_context(run_dir, show_private)
    llm_options = LLMChoice(llm=llm, model=model, base_url=base_url, concurrency=concurrency, prices=prices)
    pipe = open_pipeline(run_dir, max_cost=max_cost, analysis="ask", **llm_options)
    result = AskResult(name, question, [], [])
    spent = 0.0
    try:
        used_llm, used_model = pipe.llm.name, pipe.llm.model
        prompts = {p: load_prompt(p).version for p in ("ask_plan", "ask_answer")}
        prompts["scan"] = load_prompt("scan", version=SCAN_PROMPT_VERSION).version  # what its scans use
        first = plan_request(question, ctx)
        plan = _call(pipe, first, AskPlan, result, "plan")
        if plan is not None:
            steps, problems = check_plan(plan, ctx, max_sample)
            if problems:
                result.plan_problems = problems
                plan = _call(pipe, replan_request(first, plan.model_dump(), problems), AskPlan, result, "plan")
                if plan is not None:
                    steps, problems = check_plan(plan, ctx, max_sample)
                    if problems:
                        result.incomplete.append("the plan was still unusable after one re-ask: "
                                                 + "; ".join(problems))
                        plan = None
            if plan is not None:
                result.plan = steps
        for i, step in enumerate(result.plan, 1):
            budget = None if max_cost is None else max_cost - pipe.engine.spent - spent
            r = run_step(run_dir, i, step, name[:50], budget=budget, seed=seed, llm_options=llm_options, log=log,
                         hidden=ctx.hidden)
            spent += (r.llm["cost_usd"] or 0.0) if r.llm else 0.0
            if r.notes and any("not sent" in n or "failed" in n for n in r.notes):
                result.incomplete.append(f"step {i}: " + "; ".join(r.notes))
            if r.error and r.error.startswith("not run"):
                result.incomplete.append(f"step {i}: {r.error}")
            result.steps.append(r)
        if result.steps:
            results_text = "\n\n".join(r.text for r in result.steps)
            prompt = load_prompt("ask_answer")
            req = LLMRequest(prompt.render(question=question, results=results_text),
                             schema=AskAnswer.json_schema(), schema_name=AskAnswer.schema_name,
                             sampling=Sampling(temperature=0.0, max_tokens=1500), prompt_version=prompt.version)
            if max_cost is not None:  # the engine counts its own calls; the steps spent beside it
                pipe.engine.max_cost = max(0.0, max_cost - spent)
            answer = _call(pipe, req, AskAnswer, result, "answer")
            if answer is not None:
                result.answer = answer.answer
                result.citations, result.dropped = check_citations(run, answer.citations)
                result.numbers_matched, result.numbers_unmatched = check_numbers(answer.answer, results_text)
                result.unsupported = unsupported_reason(result)
    finally:
        result.llm = close_pipeline(pipe, "ask")
    provenance = Provenance(llm=used_llm, model=used_model, prompts=prompts,
                            created=datetime.now(UTC).isoformat(timespec="seconds"), versions=versions(),
                            max_cost=max_cost, max_sample=max_sample, seed=seed)
    write_ask(run, result, ctx, provenance)
    return result


def unsupported_reason(result: AskResult) -> str:
    """Why the answer has no support from the steps, or "": it cites no number that is in a
    step's output and no verified quote. A small model otherwise turns "find returned no
    cluster" into "none of the models apologise", a claim about the data that no data backs."""
    if not result.answer.strip() or result.citations or result.numbers_matched:
        return ""
    empty = all(r.error or r.table.empty for r in result.steps)
    return ("the answer cites no number from the steps' outputs and no verified quote"
            + ("; every step came back empty, so it rests on no data from this run" if empty else ""))


R = TypeVar("R", bound=Reply)


def _call(pipe: Pipeline, request: LLMRequest, model: type[R], result: AskResult, what: str) -> R | None:
    """One call through the engine (cached, budgeted, schema-checked with one repair)."""
    res = pipe.engine.run_sync([request], desc=f"ask {what}")[0]
    if not res.ok:
        why = "the --max-cost cap was reached" if res.status == "skipped_budget" else (res.reason or res.status)
        result.incomplete.append(f"{what}: the LLM call did not succeed ({why})")
        return None
    return model.read(res.data)


def _jsonable(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records")) if not df.empty else []


def write_ask(run: RunDir, result: AskResult, ctx: Context, provenance: Provenance) -> None:
    """``ask_<name>.json``, ``analysis_ask_<name>.parquet`` (+ one per step table) and the
    manifest's ``asks`` entry."""
    name = result.name
    for r in result.steps:
        if not r.table.empty:
            table = pa.Table.from_pandas(r.table, preserve_index=False)
            result.paths.append(run.write_table(f"analysis_ask_{name}_step{r.index}.parquet", table))
    doc = {"question": result.question, "name": name, "plan": [s.model_dump() for s in result.plan],
           "plan_problems": result.plan_problems, "grouping_columns": ctx.columns, "tools": list(ctx.tools),
           "steps": [{"index": r.index, **r.step.model_dump(), "error": r.error, "notes": r.notes,
                      "table": _jsonable(r.table), "evidence": r.evidence, "llm": r.llm or {}} for r in result.steps],
           "answer": result.answer, "citations": result.citations, "dropped_citations": result.dropped,
           "numbers_matched": result.numbers_matched, "numbers_unmatched": result.numbers_unmatched,
           "incomplete": result.incomplete, "unsupported": result.unsupported, "llm": result.llm or {},
           "provenance": provenance}
    path = run.file(f"ask_{name}.json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    result.paths.insert(0, path)
    rows: list[_Row] = []
    for i, s in enumerate(result.plan, 1):
        ran = next((x for x in result.steps if x.index == i), None)
        rows.append(_Row(part="step", step=i, tool=s.tool, text=s.purpose,
                         detail=step_text(ran).split("\n", 1)[0] if ran else "", piece_id=None, verified=None))
    rows.append(_Row(part="answer", step=None, tool=None, text=result.answer,
                     detail=f"{len(result.numbers_matched)} numbers match the steps' outputs, "
                            f"{len(result.numbers_unmatched)} do not"
                            + (f" ({', '.join(result.numbers_unmatched)})" if result.numbers_unmatched else ""),
                     piece_id=None, verified=None))
    for c in result.citations:
        rows.append(_Row(part="citation", step=None, tool=None, text=c["quote"], detail="",
                         piece_id=c["piece_id"], verified=True))
    schema = pa.schema([("part", pa.string()), ("step", pa.int64()), ("tool", pa.string()), ("text", pa.string()),
                        ("detail", pa.string()), ("piece_id", pa.string()), ("verified", pa.bool_())])
    meta = {"question": result.question, "answer": result.answer or "(none)",
            "citations": f"{len(result.citations)} verified, {len(result.dropped)} dropped (quote not in the piece)",
            "numbers": f"{len(result.numbers_matched)} match the steps' outputs, "
                       f"{len(result.numbers_unmatched)} flagged",
            "incomplete": "; ".join(result.incomplete) or "no",
            "unsupported": result.unsupported or "no"}
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
        {k: v.encode() for k, v in meta.items()})
    result.paths.insert(1, run.write_table(f"analysis_ask_{name}.parquet", table))
    from featdisco.analysis.provenance import hidden_clusters, record

    run = RunDir(run.path)  # re-read: the engine's use was recorded in the manifest since
    run.merge("asks", {name: {
        "question": result.question, "steps": [s.tool for s in result.plan],
        "citations": len(result.citations), "dropped_citations": len(result.dropped),
        "numbers_matched": len(result.numbers_matched), "numbers_unmatched": len(result.numbers_unmatched),
        "incomplete": bool(result.incomplete), "unsupported": bool(result.unsupported), "file": path.name, "created": provenance["created"]}})
    # the steps ran on the clusters the run has now, planned from their labels: stale (and
    # refreshed by this command) once the clusters or their names change
    record(run, f"ask_{name}", [p.name for p in result.paths], command="ask",
           args={"_question": result.question, "name": name, "max_sample": provenance["max_sample"],
                 "seed": provenance["seed"]}, depends="labels",
           hidden=hidden_clusters(run))  # its planner is shown the clusters not hidden
