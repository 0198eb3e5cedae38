"""``featdisco run``, ``status`` and ``transform``: call the pipeline, print what it did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.table import Table

from featdisco.cli.common import console, err_console
from featdisco.errors import FeatdiscoError
from featdisco.pipeline import STAGES, Pipeline, PipelineConfig, RunResult
from featdisco.rundir import MANIFEST, RunDir, RunLock
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
                 read_options: ReadOptions, dry: bool, quiet: bool, top: int) -> None:
    log = log_line(quiet)
    pipe = Pipeline(run_dir, cfg, log=log, progress="none" if quiet else "auto")
    if not quiet and pipe.llm.name == "local":
        log("note: the embedded local model gives demo-quality features; use --llm openai or "
            "anthropic with a frontier model for research")
    if dry:
        try:
            pipe.lock()  # it reads the run's cache; a run writing there is not disturbed
            est = pipe.estimate(inputs, read_options)
        finally:
            pipe.close()
        console.print(f"dry run, featurize: {est}")
        console.print("naming and rating add about one call per cluster plus one per 10 clusters.")
        return
    result = pipe.run(inputs, read_options)
    print_summary(result)
    print_top_clusters(result.clusters, top)
    if (result.run_dir / "clusters.parquet").exists():
        console.print(f"\noutputs in {result.run_dir}/: clusters.parquet (one row per cluster), "
                      "features.parquet, assignments.parquet, pieces.parquet, manifest.json")
        console.print(f"browse them: featdisco report {result.run_dir}  (then open "
                      f"{result.run_dir}/report/index.html)")
    if not result.complete:
        msg = result.stopped_reason or "some calls failed; rerun the same command to retry them"
        console.print(f"[yellow]run incomplete: {msg}[/yellow]")
        # scripts and schedulers must be able to tell a partial run from a finished one
        raise typer.Exit(INCOMPLETE_EXIT)


INCOMPLETE_EXIT = 3  # the run stopped at the cost cap or has failed calls; a rerun resumes


def print_summary(result: RunResult) -> None:
    table = Table(title="run summary", show_edge=False)
    for col in ("stage", "status", "seconds", "counts"):
        table.add_column(col, overflow="fold")
    for t in result.stages:
        table.add_row(t.name, "skipped (up to date)" if t.skipped else "ran", f"{t.seconds:.1f}",
                      _short(t.counts))
    console.print(table)
    c = result.clusters
    if c.num_rows:
        kinds = c.column("kind").to_pylist()
        per_kind = ", ".join(f"{k} {kinds.count(k)}" for k in PIECE_KINDS if k in kinds)
        console.print(f"clusters: {c.num_rows} ({per_kind})")
    merge = next((t.counts for t in result.stages if t.name == "merge"), None)
    if merge and merge.get("raw_clusters"):
        console.print(f"near-duplicates merged: {merge.get('merged', 0)} of {merge['raw_clusters']} clusters "
                      "folded into another (mapping: merges.parquet)")
    s = result.llm
    cost = "unknown (no price for this model)" if s.cost is None else f"${s.cost:.4f}"
    capped = f", {s.skipped_budget} not sent: cost cap reached" if s.skipped_budget else ""
    console.print(f"LLM requests: {s.calls} ({s.cached} cached, {s.failed} failed"
                  f"{', ' + str(dict(s.failed_by_reason)) if s.failed_by_reason else ''}{capped}), "
                  f"tokens {s.input_tokens:,} in / {s.output_tokens:,} out, cost {cost}")


def print_new_clusters(out_dir: Path, top: int = 15) -> None:
    """The summary of what a transform found that the dictionary lacks."""
    path = out_dir / "new_clusters.parquet"
    if not path.exists():
        console.print("new in this data: not checked (the dictionary predates per-cluster thresholds; "
                      "rerun `featdisco run` on it)")
        return
    new = pq.read_table(path)
    if new.num_rows == 0:
        console.print("new in this data: nothing; every behaviour found is one the dictionary has")
        return
    table = Table(title=f"new in this data: {new.num_rows} candidate clusters (new_clusters.parquet)",
                  show_edge=False)
    for col in ("kind", "size", "label", "nearest existing cluster"):
        table.add_column(col, overflow="fold")
    for r in new.slice(0, top).to_pylist():
        table.add_row(r["kind"], f"{r['size']:,}", r["label"] or "(unnamed)", _clip(r.get("nearest_label") or "", 40))
    console.print(table)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _short(counts: dict[str, Any]) -> str:
    """``{"features": 106, "dropped": {"duplicate": 17}}`` → ``features 106; dropped: duplicate 17``."""
    parts = []
    for key, value in counts.items():
        if isinstance(value, dict):
            if value:
                parts.append(f"{key}: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                                    for k, v in value.items()))
        elif value not in (0, None) or key in ("failed",):
            parts.append(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}")
    return "; ".join(parts)


def print_top_clusters(clusters: pa.Table, top: int, show_private: bool = False) -> None:
    if clusters.num_rows == 0 or top <= 0:
        return
    rows = clusters.to_pylist()
    for kind in PIECE_KINDS:
        mine = [r for r in rows if r["kind"] == kind and (show_private or not r.get("private"))]
        if not mine:
            continue
        mine.sort(key=lambda r: (-(r.get("interest") or 0), -(r.get("pieces") or 0)))
        table = Table(title=f"top {kind} clusters by interest", show_edge=False)
        table.add_column("id", justify="right")
        table.add_column("interest", justify="right")
        table.add_column("pieces", justify="right")
        table.add_column("label", overflow="fold")
        table.add_column("examples", overflow="fold")
        for r in mine[:top]:
            table.add_row(str(r["cluster_id"]), str(r.get("interest") or "-"), str(r["pieces"]),
                          r.get("label") or "(unnamed)",
                          "; ".join(_clip(x, 40) for x in (r.get("examples") or [])[:3]))
        console.print(table)
        hidden = sum(1 for r in rows if r["kind"] == kind and r.get("private"))
        if hidden and not show_private:
            console.print(f"  ({hidden} {kind} clusters flagged private are hidden; --show-private)")


def show_status(run_dir: Path) -> None:
    if not (run_dir / MANIFEST).exists():
        raise FeatdiscoError(f"{run_dir} is not a featdisco run (no {MANIFEST})")
    rd = RunDir(run_dir)
    m = rd.manifest
    console.print(f"run {run_dir} (created {m.get('created')}, updated {m.get('updated')})")
    if (pid := RunLock(rd.path).holder()) is not None:
        console.print(f"in progress: featdisco process {pid} is working in this run now; "
                      "stages it has not finished show as not run or incomplete")
    cfg = m.get("config") or {}
    console.print(f"llm: {cfg.get('llm') or 'auto'} {cfg.get('model') or ''}  embedder: "
                  f"{cfg.get('embedder') or 'minilm'}  clusters: {cfg.get('n_clusters') or 'auto'}")
    table = Table(show_edge=False)
    for col in ("stage", "state", "seconds", "peak MiB", "calls", "cost", "counts"):
        table.add_column(col, overflow="fold")
    for name in STAGES:
        rec = rd.stage(name)
        if rec is None:
            table.add_row(name, "not run", "", "", "", "", "")
            continue
        state = "done" if rec.complete and all((run_dir / o).exists() for o in rec.outputs) else "incomplete"
        llm = rec.llm or {}
        cost = llm.get("cost_usd")
        table.add_row(name, state, f"{rec.seconds:.1f}", f"{rec.peak_rss_mib:.0f}" if rec.peak_rss_mib else "",
                      str(llm.get("calls", "")),
                      "" if not llm else ("unknown" if cost is None else f"${cost:.4f}"), _short(rec.counts))
    console.print(table)
    totals = m.get("llm_totals") or {}
    if totals:
        cost = totals.get("cost_usd")
        console.print(f"LLM totals of the last run: {totals.get('calls', 0)} calls, {totals.get('cached', 0)} "
                      f"cached, {totals.get('failed', 0)} failed, {totals.get('input_tokens', 0):,} in / "
                      f"{totals.get('output_tokens', 0):,} out tokens, cost "
                      f"{'unknown' if cost is None else f'${cost:.4f}'}")
