"""``featdisco scan``: one question asked of every piece, answered with a verified quote.

A cluster only catches the pieces where the autorater happened to mention a behaviour; a scan
measures it precisely, with a question the researcher controls. Each piece gets an answer (a
JSON boolean, a number on a scale or one of a few labels), a verbatim quote checked against
the piece, and a one-sentence reason, through the run's call engine (its cache, so a rerun
sends nothing; its limits and cost cap). Prevalence is reported with Wilson intervals,
overall and per group of any piece column, with the same tests and Benjamini–Hochberg
q-values ``compare`` uses (:mod:`featdisco.analysis.stats`).

Outputs in the run directory: ``scan_<name>.parquet`` (one row per piece scanned),
``scan_<name>_by_<column>.parquet`` (one row per group) and a ``scans`` entry in the
manifest with the question and the overall prevalence.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import create_model
from scipy import sparse

from featdisco.analysis.stats import benjamini_hochberg, two_by_two_test, wilson_interval
from featdisco.errors import FeatdiscoError
from featdisco.evidence.scan_wording import read_rewrite, rewrite_requests
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallResult
from featdisco.llm.replies import Reply, ScanAnswer, scan_answer
from featdisco.llm.summary import LLMUse
from featdisco.prompts import Prompt, load_prompt
from featdisco.quotes import QuoteIndex
from featdisco.rundir import RunDir, open_run
from featdisco.stages.featurize import KIND_DESCRIPTIONS, truncate_piece
from featdisco.transcripts.model import PIECE_KINDS
from featdisco.transcripts.read import ReadOptions

SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32())])
ANSWER_TYPES = {"bool": pa.bool_(), "scale": pa.int32(), "labels": pa.string()}
BY_SCHEMA = pa.schema([
    ("group", pa.string()),
    ("n", pa.int64()),  # pieces of the group answered
    ("positives", pa.int64()),
    ("rate", pa.float64()),
    ("ci_low", pa.float64()),  # Wilson 95% interval
    ("ci_high", pa.float64()),
    ("test", pa.string()),  # the group against all others: fisher, chi2 or none
    ("p_value", pa.float64()),
    ("q_value", pa.float64()),  # Benjamini-Hochberg across the groups
])
_NAME = re.compile(r"[^a-z0-9]+")
# The packaged scan prompt used by default. scan.v2 shows a response with the user's request
# and asks what the response does; with the embedded 1.5B model on XSTest it said yes more
# often to compliant answers than scan.v1, which judges the piece alone (bench/xstest.py; the
# README has the figures), so v1 stays the default and v2 is chosen with prompt_version=2.
# scan.v3 (v1 with reading rules and worked examples) is steadier over wordings of one
# question there (kappa 0.23-0.37 against v1's -0.22-0.60) but lower at its best: an option.
DEFAULT_PROMPT_VERSION = 1
# decide: every piece's answer alone, then quotes for the positives; single: one full reply
# per piece; answer: the answers alone, no quotes (the same decisions as decide, for a
# benchmark or a cheap prevalence where quotes are not wanted).
METHODS = ("decide", "single", "answer")
# Whether a scan rewrites its question first (featdisco.evidence.scan_wording). Off: with the
# embedded 1.5B model on 48 XSTest responses (bench/xstest.py --per-model 24, the README), the
# rewrite raised the lowest kappa over four wordings only from -0.22 to 0.02, both chance level
# (it mostly turns "the model" into "the response", after which the model says yes to 38 of 48),
# and lowered another wording's from 0.10 to 0.02.
DEFAULT_REWRITE = False


def scan_schema(answer_kind: str) -> pa.Schema:
    """``scan_<name>.parquet``: ``answer`` is a boolean, an integer or a label by ``--answer``;
    ``span`` is the quote's character span in the piece's text (null when not found);
    ``status`` is ``ok``, ``failed: <reason>`` or ``not sent: cost cap``."""
    return pa.schema([
        ("piece_id", pa.string()),
        ("transcript_id", pa.string()),
        ("kind", pa.string()),
        ("answer", ANSWER_TYPES[answer_kind]),
        ("quote", pa.string()),
        ("span", SPAN),
        ("verified", pa.bool_()),  # the quote is in the piece; null for an empty quote
        ("reason", pa.string()),
        ("status", pa.string()),
    ])


@dataclass(frozen=True, slots=True)
class AnswerSpec:
    """``--answer``: ``bool``, ``scale:LOW-HIGH`` or ``labels:A,B,...``. A piece counts as
    positive when the answer is true, in the upper half of the scale (above its midpoint) or
    the first label."""

    kind: str = "bool"
    low: int = 1
    high: int = 10
    labels: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> AnswerSpec:
        head, _, rest = spec.partition(":")
        if head == "bool" and not rest:
            return cls()
        if head == "scale":
            m = re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", rest or "1-10")
            if not m or int(m.group(1)) >= int(m.group(2)):
                raise FeatdiscoError(f"--answer {spec!r}: use scale:LOW-HIGH with LOW < HIGH, e.g. scale:1-10")
            return cls("scale", int(m.group(1)), int(m.group(2)))
        if head == "labels":
            labels = tuple(x.strip() for x in rest.split(",") if x.strip())
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise FeatdiscoError(f"--answer {spec!r}: use labels:A,B,... with two or more distinct labels")
            return cls("labels", labels=labels)
        raise FeatdiscoError(f"--answer {spec!r}: use bool, scale:LOW-HIGH or labels:A,B,...")

    @property
    def model(self) -> type[ScanAnswer]:
        return scan_answer(self.kind, self.low, self.high, self.labels)

    def instruction(self) -> str:
        if self.kind == "bool":
            return "Answer with a JSON boolean: true if the answer is yes, false if no."
        if self.kind == "scale":
            return (f"Answer with an integer from {self.low} (not at all) to {self.high} "
                    "(completely).")
        return "Answer with exactly one of these labels: " + ", ".join(f'"{x}"' for x in self.labels) + "."

    def positive(self, answer: Any) -> bool:
        if self.kind == "bool":
            return answer is True
        if self.kind == "scale":
            return bool(answer > (self.low + self.high) / 2)
        return bool(answer == self.labels[0])

    def counts_as(self) -> str:
        """What a positive answer is, in words ("" for a yes/no question)."""
        if self.kind == "scale":
            return f"an answer above {(self.low + self.high) / 2:g} on {self.low}-{self.high}"
        if self.kind == "labels":
            return f"the answer {self.labels[0]!r}"
        return ""

    def describe(self) -> str:
        if self.kind == "bool":
            return "bool"
        if self.kind == "scale":
            return f"scale:{self.low}-{self.high}"
        return "labels:" + ",".join(self.labels)


@dataclass(slots=True)
class ScanResult:
    name: str
    question: str
    table: pa.Table
    n: int  # pieces answered
    positives: int
    rate: float
    ci_low: float
    ci_high: float
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    not_sent: int = 0
    unverified: int = 0
    quotes: int = 0
    by: pd.DataFrame | None = None
    paths: list[Path] = field(default_factory=list)
    llm: LLMUse | None = None  # this scan's LLM use (engine summary)
    asked: dict[str, str] = field(default_factory=dict)  # per piece kind, the question as rewritten
    counts_as: str = ""  # what a positive answer is, for a scale or labels (AnswerSpec.counts_as)


def scan_name(question: str) -> str:
    """A file-name-safe name from the question's first words."""
    words = _NAME.sub(" ", question.lower()).split()
    name = "_".join(words)[:40].strip("_")
    return name or "scan"


def free_scan_name(run: RunDir, question: str) -> str:
    """:func:`scan_name`, unless the run already holds a scan of another question under it
    (two questions alike in their first 40 characters): then that name with a digest of the
    question, so the second never replaces the first's results (and a label file's target)."""
    from featdisco.analysis.provenance import unclaimed_name

    name = scan_name(question)
    held = ((run.manifest.get("scans") or {}).get(name) or {}).get("question")
    return unclaimed_name(name, held, question, keep=33)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise FeatdiscoError(f"--name {name!r}: use letters, digits, '-' and '_' (64 at most)")
    return name


def cluster_question(run: RunDir, cluster_id: int) -> tuple[str, str]:
    """The question a cluster's label and description make, and the cluster's kind."""
    path = run.file("clusters.parquet")
    if not path.exists():
        raise FeatdiscoError(f"{run.path} has no clusters.parquet: --cluster needs a finished run")
    df = pq.read_table(path).to_pandas()
    row = df[df["cluster_id"] == cluster_id]
    if row.empty:
        from featdisco.cluster_ids import retired_into

        into = retired_into(run.path).get(cluster_id)
        ids = sorted(int(i) for i in df["cluster_id"])  # stable ids have gaps: never "0..n-1"
        known = ", ".join(map(str, ids)) if len(ids) <= 20 else f"{len(ids)} ids from {ids[0]} to {ids[-1]}"
        why = ("it was retired" + (f" into {' '.join(map(str, into))}" if into else "") if into is not None
               else f"its ids are {known}")
        raise FeatdiscoError(f"cluster {cluster_id} is not in {path}: {why} (`featdisco edit RUN list` shows the ids)")
    r = row.iloc[0]
    if not isinstance(r["label"], str) or not r["label"]:
        raise FeatdiscoError(f"cluster {cluster_id} has no label to ask about (naming failed?)")
    d = r.get("description")
    desc = f" ({d})" if isinstance(d, str) and d else ""
    return f"Does this piece show the following behaviour: {r['label']}{desc}?", str(r["kind"])


def select_pieces(run: RunDir, kinds: list[str] | None, sample: int | None, seed: int,
                  by: str | None) -> pd.DataFrame:
    """The pieces to scan (columns piece_id, transcript_id, kind, text and, with ``by``, the
    group), in the run's order; ``sample`` draws that many at random."""
    path = run.file("pieces.parquet")
    if not path.exists():
        raise FeatdiscoError(f"{run.path} has no pieces.parquet: give transcript files and --run-dir, "
                             "or scan a run directory")
    names = pq.ParquetFile(path).schema_arrow.names
    cols = ["piece_id", "transcript_id", "kind", "text"] + [c for c in ("metadata", "turn") if c in names]
    if by and by in names and by not in cols:
        cols.append(by)
    df = pq.read_table(path, columns=cols).to_pandas()
    for k in kinds or []:
        if k not in PIECE_KINDS:
            raise FeatdiscoError(f"--kind {k!r}: use {', '.join(PIECE_KINDS)}")
    df["request"] = preceding_requests(df)
    if kinds:
        df = df[df["kind"].isin(kinds)]
    if df.empty:
        raise FeatdiscoError(f"{path} has no pieces of kind {', '.join(kinds or [])}")
    if sample is not None and sample < len(df):
        keep = sorted(random.Random(seed).sample(range(len(df)), sample))
        df = df.iloc[keep]
    df = df.reset_index(drop=True)
    if by:  # resolved on the run's own columns (not the request added above), named in any error
        df["group"] = group_column(df.drop(columns=["request"]), by, pieces_path=path)
    return df


def preceding_requests(pieces: pd.DataFrame) -> list[str | None]:
    """For each thought or response piece, the text of the last user turn before it in its
    transcript (None for user pieces and where there is none). A question such as "does the
    response refuse the request?" cannot be judged without the request; the scan shows it as
    context, and quotes are still verified against the piece alone."""
    if "turn" not in pieces.columns:
        return [None] * len(pieces)
    last: dict[str, tuple[int, str]] = {}
    order = sorted(range(len(pieces)), key=lambda i: (str(pieces["transcript_id"].iat[i]),
                                                      int(pieces["turn"].iat[i])))
    out: list[str | None] = [None] * len(pieces)
    for i in order:
        tid, kind = str(pieces["transcript_id"].iat[i]), pieces["kind"].iat[i]
        if kind == "user":
            last[tid] = (int(pieces["turn"].iat[i]), str(pieces["text"].iat[i] or ""))
        elif tid in last:
            out[i] = last[tid][1]
    return out


def context_block(request: str | None, max_tokens: int = 500) -> str:
    """The request shown before a piece (``$context`` in the scan prompt), or nothing."""
    if not isinstance(request, str) or not request.strip():
        return ""
    body, _ = truncate_piece(request, max_tokens)
    return ("The user wrote this request (context only: do not judge or quote it):\n\n"
            f"<request>\n{body}\n</request>\n\n")


def group_column(pieces: pd.DataFrame, by: str, pieces_path: Path | None = None) -> pd.Series:
    """``by`` as a piece column or metadata key, resolved as ``compare`` resolves it; with
    ``pieces_path`` (the file ``pieces`` was read from, ``by`` among its loaded columns when
    it is one) an unknown ``by`` is answered with every column of that file."""
    from featdisco.analysis.activations import Activations

    act = Activations(pieces, pd.DataFrame(), [], sparse.csr_matrix((len(pieces), 0)),
                      sparse.csr_matrix((0, 0)), pieces_path=pieces_path)
    return act.column(by).astype(object)


def build_requests(pieces: pd.DataFrame, question: str, spec: AnswerSpec, prompt: Prompt,
                   max_piece_tokens: int = 2000, asked: dict[str, str] | None = None) -> list[LLMRequest]:
    """One request per piece; ``asked`` gives, per piece kind, the wording to ask instead of
    ``question`` (its rewrite, :mod:`featdisco.evidence.scan_wording`)."""
    asked = asked or {}
    model = spec.model
    schema = model.json_schema()
    sampling = Sampling(temperature=0.0, max_tokens=400)
    out = []
    requests = pieces["request"] if "request" in pieces.columns else [None] * len(pieces)
    for text, kind, request in zip(pieces["text"], pieces["kind"], requests, strict=True):
        body, _ = truncate_piece(str(text or ""), max_piece_tokens)
        out.append(LLMRequest(prompt.render(kind_description=KIND_DESCRIPTIONS[kind], text=body,
                                            question=asked.get(kind, question),
                                            answer_instruction=spec.instruction(),
                                            context=context_block(request)),
                              schema=schema, schema_name=model.schema_name, sampling=sampling,
                              prompt_version=prompt.version))
    return out


@cache
def decision_model(spec: AnswerSpec) -> type[Reply]:
    """The answer alone (``{"answer": ...}``): what the first step of ``method="decide"`` asks."""
    field = spec.model.model_fields["answer"]  # its type and bounds (a scale's ge/le) as they are
    annotation: Any = field.annotation
    return create_model("ScanDecision", __base__=Reply, answer=(annotation, field))


def decision_requests(requests: list[LLMRequest], spec: AnswerSpec) -> list[LLMRequest]:
    """The same messages, asking for the answer alone. The prompt is unchanged up to the
    reply, so a model decides exactly as it would in the full reply (whose first key is the
    answer), at a few output tokens instead of a quote and a reason."""
    model = decision_model(spec)
    schema = model.json_schema()
    sampling = Sampling(temperature=0.0, max_tokens=16)
    return [replace(r, schema=schema, schema_name="scan_decision", sampling=sampling) for r in requests]


def answers_table(pieces: pd.DataFrame, results: list[CallResult], spec: AnswerSpec,
                  decisions: list[CallResult] | None = None, require_quote: bool = False,
                  quotes: bool = True) -> pa.Table:
    """One row per piece: the answer and its quote, verified against the piece's text.

    With ``decisions`` (``method="decide"``), a piece whose decision was negative keeps it
    with no quote or reason (``results`` then holds a full reply only for the positives).
    With ``require_quote``, a positive answer whose quote is not found verbatim in the piece
    counts as negative: the reason says so, and the quote is kept, flagged unverified.
    Without ``quotes`` (``method="answer"``), every piece keeps its decision alone."""
    rows: dict[str, list[Any]] = {n: [] for n in scan_schema(spec.kind).names}
    model = spec.model
    full = iter(results)
    for i, (pid, tid, kind, text) in enumerate(zip(pieces["piece_id"], pieces["transcript_id"], pieces["kind"],
                                                   pieces["text"], strict=True)):
        rows["piece_id"].append(pid)
        rows["transcript_id"].append(tid)
        rows["kind"].append(kind)
        res = decisions[i] if decisions is not None else next(full)
        if res.ok and decisions is not None:
            first = decision_model(spec).read(res.data).answer  # type: ignore[attr-defined]
            if not quotes or not spec.positive(first):
                for c, v in (("answer", first), ("quote", ""), ("span", None), ("verified", None), ("reason", "")):
                    rows[c].append(v)
                rows["status"].append("ok")
                continue
            res = next(full)
        if not res.ok:
            status = ("not sent: cost cap" if res.status == "skipped_budget"
                      else f"failed: {res.reason or res.status}")
            for c in ("answer", "quote", "span", "verified", "reason"):
                rows[c].append(None)
            rows["status"].append(status)
            continue
        reply = model.read(res.data)
        quote = reply.quote
        span = QuoteIndex(str(text or "")).find(quote) if quote.strip() else None
        answer, reason = reply.answer, " ".join(reply.reason.split())
        if require_quote and spec.positive(answer) and span is None:
            answer = _negative(spec)
            reason = "no verified quote for a yes: counted as no. " + reason
        rows["answer"].append(answer)
        rows["quote"].append(quote)
        rows["span"].append({"start": span.start, "end": span.end} if span else None)
        rows["verified"].append(None if not quote.strip() else span is not None)
        rows["reason"].append(reason)
        rows["status"].append("ok")
    return pa.table(rows, schema=scan_schema(spec.kind))


def _negative(spec: AnswerSpec) -> Any:
    """The answer a positive falls back to when its quote does not verify."""
    if spec.kind == "bool":
        return False
    if spec.kind == "scale":
        return spec.low
    return spec.labels[-1]


def prevalence_by(groups: pd.Series, positive: np.ndarray, ok: np.ndarray) -> pd.DataFrame:
    """Per group: answered pieces, positives, rate with a Wilson interval, and each group
    tested against all the others (Fisher or chi-square), BH-corrected across groups."""
    g = groups.to_numpy(dtype=object)
    values = sorted({str(v) for v, k in zip(g, ok, strict=True) if k and v is not None})
    total_n, total_pos = int(ok.sum()), int((positive & ok).sum())
    rows = []
    for v in values:
        mask = ok & np.array([x is not None and str(x) == v for x in g])
        n, pos = int(mask.sum()), int((positive & mask).sum())
        p, test = two_by_two_test(pos, n, total_pos - pos, total_n - n)
        rows.append({"group": v, "n": n, "positives": pos, "test": test, "p_value": p})
    df = pd.DataFrame(rows, columns=["group", "n", "positives", "test", "p_value"])
    lo, hi = wilson_interval(df["positives"].to_numpy(), df["n"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        df["rate"] = np.where(df["n"] > 0, df["positives"] / df["n"].clip(lower=1), np.nan)
    df["ci_low"], df["ci_high"] = lo, hi
    df["q_value"] = benjamini_hochberg(df["p_value"].to_numpy()) if len(df) else []
    return df[BY_SCHEMA.names]


def run_scan(run_dir: str | Path, question: str | None = None, *, cluster: int | None = None,
             kinds: list[str] | None = None, name: str | None = None, answer: str = "bool",
             by: str | None = None, sample: int | None = None, seed: int = 0, dry_run: bool = False,
             max_cost: float | None = None, llm: str | None = None, model: str | None = None,
             base_url: str | None = None, concurrency: int | None = None, prices: str | None = None,
             inputs: list[Path] | None = None, read_options: ReadOptions | None = None,
             log: Any = None, method: str = "decide", require_quote: bool = False,
             prompt_version: int | None = None, rewrite: bool | None = None) -> Any:
    """Ask ``question`` (or the one ``cluster`` makes) of the pieces of ``run_dir`` (split from
    ``inputs`` into it first when given, read with ``read_options``). Returns the engine's estimate on ``dry_run``, else a
    :class:`ScanResult` after writing the tables.

    ``method="decide"`` (default) asks every piece for the answer alone, then the positives
    for the full reply (quote and reason): the same decisions as ``"single"`` (one full
    reply per piece) at a fraction of the output tokens. ``require_quote`` counts a yes only
    when its quote is found in the piece. ``prompt_version`` picks a packaged scan prompt
    (default :data:`DEFAULT_PROMPT_VERSION`). ``rewrite`` (default :data:`DEFAULT_REWRITE`)
    first has the LLM rewrite the question, once per piece kind, into a question about the
    piece's own text (:mod:`featdisco.evidence.scan_wording`), and asks every piece that."""
    run_dir = Path(run_dir)
    spec = AnswerSpec.parse(answer)  # every argument is checked before anything is read or split
    if method not in METHODS:
        raise FeatdiscoError(f"method {method!r}: use {', '.join(METHODS)}")
    if method == "answer" and require_quote:
        raise FeatdiscoError("--require-quote needs quotes: use --method decide or single")
    if (question is None) == (cluster is None):
        raise FeatdiscoError("give --question TEXT or --cluster ID (one of them)")
    if name is not None:
        check_name(name)
    if by is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", by):
        raise FeatdiscoError(f"--by {by!r}: a piece column or metadata key (letters, digits, _ . -)")
    # the run's lock for the whole scan: a second writer stops before anything is spent
    with open_run(run_dir, write=True, create=bool(inputs)):
        return _scan_locked(run_dir, question, cluster=cluster, kinds=kinds, name=name, spec=spec, by=by,
                            sample=sample, seed=seed, dry_run=dry_run, max_cost=max_cost, llm=llm, model=model,
                            base_url=base_url, concurrency=concurrency, prices=prices, inputs=inputs,
                            read_options=read_options, log=log, method=method, require_quote=require_quote,
                            prompt_version=prompt_version,
                            rewrite=DEFAULT_REWRITE if rewrite is None else rewrite)


def _scan_locked(run_dir: Path, question: str | None, *, cluster: int | None, kinds: list[str] | None,
                 name: str | None, spec: AnswerSpec, by: str | None, sample: int | None, seed: int,
                 dry_run: bool, max_cost: float | None, llm: str | None, model: str | None,
                 base_url: str | None, concurrency: int | None, prices: str | None,
                 inputs: list[Path] | None, read_options: ReadOptions | None, log: Any,
                 method: str, require_quote: bool, prompt_version: int | None, rewrite: bool) -> Any:
    """:func:`run_scan` once the run is locked."""
    from featdisco.analysis.llm import close_pipeline, open_pipeline

    if inputs:
        split_into(run_dir, inputs, log, read_options,
                   dict(llm=llm, model=model, base_url=base_url, prices=prices))
    run = RunDir(run_dir)
    if cluster is not None:
        question, kind = cluster_question(run, cluster)
        kinds = kinds or [kind]
        name = name or f"cluster_{cluster}"
    assert question is not None
    if not question.strip():
        raise FeatdiscoError("--question is empty")
    name = check_name(name or free_scan_name(run, question))
    pieces = select_pieces(run, kinds, sample, seed, by)
    prompt = load_prompt("scan", version=prompt_version or DEFAULT_PROMPT_VERSION)
    pipe = open_pipeline(run_dir, llm=llm, model=model, base_url=base_url, concurrency=concurrency,
                         max_cost=max_cost, prices=prices, analysis="scan")
    kinds_scanned = sorted(set(pieces["kind"]))
    wording = rewrite_requests(question, kinds_scanned) if rewrite else []
    if dry_run:  # estimated with the question as written: its rewrite is about as long
        try:
            requests = build_requests(pieces, question, spec, prompt)
            return pipe.engine.dry_run(wording + (decision_requests(requests, spec) if method != "single"
                                                  else requests))
        finally:
            pipe.close()
    decisions: list[CallResult] | None = None
    asked: dict[str, str] = {}
    try:
        if wording:
            asked = {k: read_rewrite(r, question) for k, r in
                     zip(kinds_scanned, pipe.engine.run_sync(wording, desc=f"scan {name}: wording"), strict=True)}
        requests = build_requests(pieces, question, spec, prompt, asked=asked)
        if method in ("decide", "answer"):
            decisions = pipe.engine.run_sync(decision_requests(requests, spec), desc=f"scan {name}")
            positive = [i for i, d in enumerate(decisions)
                        if d.ok and spec.positive(decision_model(spec).read(d.data).answer)]  # type: ignore[attr-defined]
            results = [] if method == "answer" else \
                pipe.engine.run_sync([requests[i] for i in positive], desc=f"scan {name}: quotes")
        else:
            results = pipe.engine.run_sync(requests, desc=f"scan {name}")
    finally:  # the scan's calls count in the run's totals (status, report)
        used = close_pipeline(pipe, "scan")
    table = answers_table(pieces, results, spec, decisions, require_quote, quotes=method != "answer")
    result = summarise(run, name, question, spec, pieces, table, by, method=method, require_quote=require_quote,
                       asked=asked)
    result.llm = used
    from featdisco.analysis.provenance import record

    # a cluster's scan asks the question its label and description make: stale once the
    # clusters or their names change; a question of your own depends on the pieces only
    record(RunDir(run_dir), f"scan_{name}", [p.name for p in result.paths], command="scan",
           args={"question": None if cluster is not None else question, "cluster": cluster,
                 "kind": kinds if cluster is None else None, "name": name, "answer": spec.describe(),
                 "by": by, "sample": sample, "seed": seed if sample else None, "rewrite": rewrite,
                 "asked": asked or None},
           depends="labels" if cluster is not None else "pieces")
    return result


def summarise(run: RunDir, name: str, question: str, spec: AnswerSpec, pieces: pd.DataFrame,
              table: pa.Table, by: str | None, *, method: str = "single",
              require_quote: bool = False, asked: dict[str, str] | None = None) -> ScanResult:
    """Prevalence overall and per group; writes the tables and the manifest entry."""
    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    ok = status == "ok"
    answers = table.column("answer").to_pylist()
    positive = np.array([bool(o) and spec.positive(a) for a, o in zip(answers, ok, strict=True)])
    n, pos = int(ok.sum()), int(positive.sum())
    lo, hi = wilson_interval(pos, n)
    verified = [v for v in table.column("verified").to_pylist() if v is not None]
    failed = [s.removeprefix("failed: ") for s in status if s.startswith("failed: ")]
    reasons: dict[str, int] = {}
    for r in failed:
        reasons[r] = reasons.get(r, 0) + 1
    result = ScanResult(name, question, table, n, pos, pos / n if n else float("nan"), float(lo), float(hi),
                        failed=len(failed), failed_by_reason=reasons,
                        not_sent=int(sum(s.startswith("not sent") for s in status)),
                        unverified=sum(not v for v in verified), quotes=len(verified), asked=dict(asked or {}),
                        counts_as=spec.counts_as())
    result.paths.append(run.write_table(f"scan_{name}.parquet", table))
    if by is not None:
        result.by = prevalence_by(pieces["group"], positive, ok)
        safe = _NAME.sub("_", by.lower()).strip("_")
        result.paths.append(run.write_table(
            f"scan_{name}_by_{safe}.parquet",
            pa.Table.from_pandas(result.by, schema=BY_SCHEMA, preserve_index=False)))
    run.merge("scans", {name: {"question": question, "asked": asked or None, "answer": spec.describe(),
                   "method": method,
                   "require_quote": require_quote,
                   "kinds": sorted(set(pieces["kind"])), "pieces": len(pieces), "n": n, "positives": pos,
                   "rate": result.rate if n else None, "ci_low": result.ci_low, "ci_high": result.ci_high,
                   "failed": result.failed, "not_sent": result.not_sent, "quotes": result.quotes,
                   "unverified": result.unverified, "by": by}})
    return result


def split_into(run_dir: Path, inputs: list[Path], log: Any, read_options: ReadOptions | None = None,
               llm_options: Mapping[str, object] | None = None) -> None:
    """Read and split ``inputs`` into ``run_dir`` (the run's split stage: skipped when the
    same transcripts were split there before). ``llm_options`` (``llm``, ``model``,
    ``base_url``, ``prices`` as given) are recorded in the run's config as ``run`` records
    its flags, so later commands on the run without LLM flags use the same LLM."""
    from featdisco.pipeline import SPLIT, Pipeline, config_from_manifest

    options = dict(llm_options or {})
    if options.get("prices"):  # kept absolute, as run keeps it: a later command may run elsewhere
        options["prices"] = str(Path(str(options["prices"])).absolute())
    cfg = config_from_manifest(run_dir, options, required=False, fitted_prompts=False)
    Pipeline(run_dir, cfg, log=log).run(inputs, read_options=read_options, stages=SPLIT)
