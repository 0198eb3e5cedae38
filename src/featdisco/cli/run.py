"""``featdisco run``, ``status`` and ``transform``: call the pipeline, print what it did."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer

from featdisco.analysis.provenance import (
    analyses_status,
    dictionary_changed,
    edition_text,
    stale_reason,
)
from featdisco.cli.common import INCOMPLETE_EXIT, console, err_console, exit_if_failed
from featdisco.cli.tables import Output
from featdisco.cluster_ids import id_history
from featdisco.curation import PENDING, edit_fates
from featdisco.embedders import DEFAULT_EMBEDDER
from featdisco.errors import FeatdiscoError
from featdisco.llm.registry import resolve_backend
from featdisco.pipeline import STAGES, Pipeline, PipelineConfig, RunResult
from featdisco.rundir import MANIFEST, RunDir, RunLock, check_run_dir
from featdisco.runsummary import Totals, headline, run_totals, stage_cells
from featdisco.stages.featurize import evidence_line
from featdisco.transcripts.model import PIECE_KINDS
from featdisco.transcripts.read import ReadOptions


def parse_clusters(spec: str | None) -> int | dict[str, int] | None:
    """``40`` (every kind) or ``user=20,thought=60,response=40``."""
    if spec is None or spec == "auto":
        return None
    try:
        if "=" not in spec:
            k = int(spec)
            if k < 1:
                raise ValueError
            return k
        out: dict[str, int] = {}
        for item in spec.split(","):
            kind, _, value = item.partition("=")
            if kind.strip() not in PIECE_KINDS:
                raise FeatdiscoError(f"--clusters: unknown kind {kind!r}; use user, thought, response")
            out[kind.strip()] = int(value)
            if out[kind.strip()] < 1:
                raise ValueError
        return out
    except ValueError:
        raise FeatdiscoError(f"--clusters: {spec!r} is not a positive number, 'auto', or "
                             "KIND=N,... (e.g. user=20,response=40)") from None


def parse_prompts(specs: list[str] | None) -> dict[str, str]:
    """``--prompt featurize=PATH`` (repeatable) → {name: path}."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise FeatdiscoError(f"--prompt {spec!r}: use NAME=PATH, e.g. featurize=my_prompt.txt")
        out[name.strip()] = path.strip()
    return out


def log_line(quiet: bool) -> Any:
    def log(msg: str) -> None:
        if not quiet:
            err_console.print(msg, markup=False, highlight=False)
    return log


def run_pipeline(*, inputs: list[Path] | None, run_dir: Path, cfg: PipelineConfig,
                 read_options: ReadOptions, dry: bool, quiet: bool, top: int | None,
                 out: Output | None = None, show_private: bool = False) -> None:
    out = out or Output()
    log = log_line(quiet)
    made = not run_dir.exists()
    pipe = Pipeline(run_dir, cfg, log=log, progress="none" if quiet else "auto")
    if not dry:
        _ = pipe.llm  # built now, so a missing API key stops the run before anything is read
    if not quiet and resolve_backend(cfg.llm, cfg.base_url)[0] == "local":
        log("note: the embedded local model gives demo-quality features; use --llm openai or "
            "anthropic with a frontier model for research")
    if dry:
        try:
            pipe.lock()  # it reads the run's cache; a run writing there is not disturbed
            est = pipe.estimate(inputs, read_options)
        finally:
            pipe.close()
            if made:  # a dry run leaves no run directory behind (its lock and empty cache)
                shutil.rmtree(run_dir, ignore_errors=True)
        out.say(f"dry run, featurize: {est}")
        out.say("naming and rating add about one call per cluster plus one per 10 clusters.")
        return
    warn_if_budget_spent(run_dir, cfg.budget, out)
    fitted_on = _read_output(run_dir) if inputs is not None else None
    result = pipe.run(inputs, read_options)
    print_summary(result, out)
    now = _read_output(run_dir) if fitted_on is not None else None
    if fitted_on is not None and now is not None and now[0] != fitted_on[0]:
        out.say(f"note: {run_dir} had been fitted on other transcripts ({fitted_on[1]}); this run "
                f"replaced that fit with one on these ({now[1]}). Pass a new --run-dir to keep both.")
    print_top_clusters(result.clusters, top, out, show_private, result.run_dir)
    if (result.run_dir / "clusters.parquet").exists():
        out.say(f"\noutputs in {result.run_dir}/: clusters.parquet (one row per cluster), "
                "features.parquet, assignments.parquet, pieces.parquet, manifest.json")
        out.say(f"browse them: featdisco report {result.run_dir}  (then open "
                f"{result.run_dir}/report/index.html)")
    if not result.complete:
        # scripts and schedulers must be able to tell a partial run from a finished one
        if result.stopped_reason:
            out.say(f"run incomplete: {result.stopped_reason}")
        else:
            exit_if_failed(result.llm.as_dict(), out.say, "run incomplete")
            out.say("run incomplete: some stages did not finish; rerun the same command to finish them")
        raise typer.Exit(INCOMPLETE_EXIT)


def _read_output(run_dir: Path) -> tuple[str, int] | None:
    """The read stage's output hash and transcript count, as recorded; None before a read."""
    if not (run_dir / MANIFEST).is_file():
        return None
    rec = (RunDir(run_dir).manifest.get("stages") or {}).get("read") or {}
    digest, counts = rec.get("output_hash"), rec.get("counts") or {}
    if not isinstance(digest, str) or not isinstance(counts, dict):
        return None
    return digest, int(counts.get("transcripts") or 0)


def warn_if_budget_spent(run_dir: Path, budget: float | None, out: Output) -> None:
    """A --budget at or below what the run has already spent sends nothing new: say so before
    the run starts, rather than let it stop at its first uncached call."""
    if budget is None or not (run_dir / MANIFEST).is_file():
        return
    spent = run_totals(RunDir(run_dir).manifest, run_dir).spent or 0.0
    if spent >= budget:
        out.say(f"note: this run has already spent ${spent:.4f}, at or over --budget ${budget:g}: "
                "no new call will be sent (cached results are still used; a higher --budget continues)")


def exit_if_transform_failed(out_dir: Path, say: Any) -> None:
    """A transform whose featurize calls failed has pieces with missing features: exit 3."""
    totals = run_totals(RunDir(out_dir).manifest, out_dir)
    if any(s.state == "incomplete" for s in totals.stages):
        exit_if_failed(totals.last, say, "transform incomplete")
        say("transform incomplete: a stage did not finish; rerun the same command to finish it")
        raise typer.Exit(INCOMPLETE_EXIT)


STAGE_COLUMNS = ["stage", "state", "seconds", "peak MiB", "calls", "tokens", "cost", "counts"]


def render_summary(run_dir: Path, out: Output, *, this_invocation: dict[str, str] | None = None,
                   title: str | None = None) -> Totals:
    """The one run-summary renderer (``run``'s summary and ``status``): the stage table and
    the LLM totals of every invocation, from :func:`run_totals`. ``this_invocation`` marks
    each stage ran / skipped in the invocation that just finished."""
    rd = RunDir(run_dir)
    totals = run_totals(rd.manifest, run_dir)
    rows = []
    for row in totals.stages:
        cells = stage_cells(row)
        if this_invocation is not None and row.name in this_invocation:
            cells["state"] = f"{cells['state']}, {this_invocation[row.name]}"
        rows.append(cells)
    known = {r["stage"] for r in rows}
    rows += [{"stage": n, "state": "not run"} for n in STAGES if n not in known]
    order = {n: i for i, n in enumerate(STAGES)}
    rows.sort(key=lambda r: order.get(r["stage"], len(order)))
    out.rows(rows, STAGE_COLUMNS, title, primary=False)
    for line in headline(totals) + totals.notes:
        out.say(line)
    return totals


def print_summary(result: RunResult, out: Output | None = None) -> None:
    out = out or Output()
    render_summary(result.run_dir, out, title="run summary",
                   this_invocation={t.name: "skipped (up to date)" if t.skipped else "ran" for t in result.stages})
    c = result.clusters
    if c.num_rows:
        kinds = c.column("kind").to_pylist()
        per_kind = ", ".join(f"{k} {kinds.count(k)}" for k in PIECE_KINDS if k in kinds)
        out.say(f"clusters: {c.num_rows} ({per_kind})")
    featurize = next((t for t in result.stages if t.name == "featurize"), None)
    if featurize is not None and (line := evidence_line(featurize.counts)):
        out.say(line)
    merge = next((t.counts for t in result.stages if t.name == "merge"), None)
    if merge and merge.get("raw_clusters"):
        out.say(f"near-duplicates merged: {merge.get('merged', 0)} of {merge['raw_clusters']} clusters "
                "folded into another (mapping: merges.parquet)")


def print_new_clusters(out_dir: Path, top: int = 15, out: Output | None = None) -> None:
    """The summary of what a transform found that the dictionary lacks."""
    out = out or Output()
    path = out_dir / "new_clusters.parquet"
    if not path.exists():
        out.say("new in this data: not checked (the dictionary predates per-cluster thresholds; "
                "rerun `featdisco run` on it)")
        return
    new = pq.read_table(path)
    if new.num_rows == 0:
        out.say("new in this data: nothing; every behaviour found is one the dictionary has")
        return
    rows = [{**r, "label": r["label"] or "(unnamed)", "nearest_label": _clip(r.get("nearest_label") or "", 40)}
            for r in new.slice(0, top).to_pylist()]
    out.rows(rows, ["kind", "size", "label", "nearest_label"],
             f"new in this data: {new.num_rows} candidate clusters (new_clusters.parquet)")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def print_top_clusters(clusters: pa.Table, top: int | None, out: Output | None = None,
                       show_private: bool = False, run_dir: Path | None = None) -> None:
    """The most interesting clusters of each kind (all clusters in JSON/CSV unless --top),
    without those flagged private or drawn from too few transcripts unless asked."""
    from featdisco.analysis.visibility import NOTHING_HIDDEN, visibility

    out = out or Output()
    n = out.limit(top, 8)
    if clusters.num_rows == 0 or n == 0:
        return
    vis = visibility(run_dir, show_private=show_private) if run_dir is not None else NOTHING_HIDDEN
    rows = clusters.to_pylist()
    for kind in PIECE_KINDS:
        mine = [r for r in rows if r["kind"] == kind and r["cluster_id"] not in vis.hidden]
        if not mine:
            continue
        mine.sort(key=lambda r: (-(r.get("interest") or 0), -(r.get("pieces") or 0)))
        rated = any(r.get("interest") is not None for r in mine)  # else (--rate-batch 0): by size
        mine = mine[:n] if n is not None else mine
        if out.machine:
            out.rows(mine, [])
        else:
            out.rows([{**r, "examples": "; ".join(_clip(x, 40) for x in (r.get("examples") or [])[:3]),
                       "label": r.get("label") or "(unnamed)"} for r in mine],
                     ["cluster_id", *(["interest"] if rated else []), "pieces", "transcripts", "label", "examples"],
                     f"top {kind} clusters by {'interest' if rated else 'pieces'}")
    if (note := vis.note()) is not None:
        out.say(note)


def show_status(run_dir: Path, json_: bool = False) -> None:
    rd = RunDir(check_run_dir(run_dir, marks=(MANIFEST,)))
    m = rd.manifest
    holder = RunLock(rd.path).holder()
    if json_:
        doc = {"run": str(run_dir), "created": m.get("created"), "updated": m.get("updated"),
               "in_progress_pid": holder, "config": m.get("config") or {},
               **run_totals(m, run_dir).as_dict(), "analyses": analyses_status(run_dir),
               "pending_edits": [f for f in edit_fates(rd.path) if f["status"] == PENDING],
               "dictionary_changed": dictionary_changed(run_dir)}
        if (ids := id_history(run_dir)) is not None:  # stable ids: the retired ones and where they went
            doc["cluster_ids"] = ids
        sys.stdout.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
        return
    console.print(f"run {run_dir} (created {m.get('created')}, updated {m.get('updated')})", markup=False)
    if holder is not None:
        console.print(f"in progress: featdisco process {holder} is working in this run now; "
                      "stages it has not finished show as not run or incomplete")
    cfg = m.get("config") or {}
    totals = run_totals(m, run_dir)
    replied = f" (replies from {', '.join(sorted(totals.models))})" if totals.models else ""
    k = cfg.get("n_clusters") or "auto"
    if isinstance(k, dict):  # as --clusters takes it (user=20,response=40), not a Python dict
        k = ",".join(f"{kind}={k[kind]}" for kind in ("user", "thought", "response") if kind in k)
    console.print(f"llm: {cfg.get('llm') or 'auto'} {cfg.get('model') or ''}{replied}  embedder: "
                  f"{cfg.get('embedder') or DEFAULT_EMBEDDER}  clusters: {k}", markup=False)
    render_summary(run_dir, Output())
    if (edition := m.get("fitted_dictionary")) is not None:  # a transform's output
        console.print(f"dictionary: the clusters of {m.get('fitted_run')}, {edition_text(edition)}", markup=False)
    if (changed := dictionary_changed(run_dir)) is not None:
        console.print(f"warning: {changed}", markup=False)
    for fate in edit_fates(rd.path):
        if fate["status"] == PENDING:
            console.print(f"edit {fate['index']} ({fate['edit']}) is {PENDING}: the clusters, analyses and report "
                          f"do not show it; {fate['reason']}", markup=False)
    for a in analyses_status(run_dir):
        if not a["current"]:
            how = f"refresh: {a['command']}" if a["command"] else a.get("note", "")
            why = a.get("reason") or stale_reason(a["depends"])
            console.print(f"stale analysis {a['name']} ({why}); {how}", markup=False)
