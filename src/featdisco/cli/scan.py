"""``featdisco scan``: ask one question of every piece and measure the answer's prevalence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from featdisco.cli.common import console, err_console
from featdisco.errors import FeatdiscoError

FAILED_EXIT = 3  # some calls failed or were held back at the cost cap; a rerun retries them


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def register(app: typer.Typer) -> None:
    @app.command("scan")
    def scan_cmd(
        paths: Annotated[list[Path], typer.Argument(
            help="A run directory; or, with --run-dir, transcript files to split into it first.",
            show_default=False)],
        question: Annotated[str | None, typer.Option(
            "--question", help="The question asked of each piece, e.g. \"Does the model reason about "
            "its remaining token budget?\"")] = None,
        cluster: Annotated[int | None, typer.Option(
            "--cluster", help="Ask whether each piece shows this cluster's behaviour (its label and "
            "description become the question; its kind the default --kind).")] = None,
        kind: Annotated[list[str] | None, typer.Option(
            "--kind", help="Piece kinds to scan: user, thought, response (repeatable or comma-separated; "
            "default all).")] = None,
        name: Annotated[str | None, typer.Option(
            "--name", help="Name of the scan's outputs, scan_NAME.parquet (default: from the question).")] = None,
        answer: Annotated[str, typer.Option(
            "--answer", help="bool (a JSON boolean), scale:LOW-HIGH (positive above the midpoint) or "
            "labels:A,B,... (positive: the first label).")] = "bool",
        by: Annotated[str | None, typer.Option(
            "--by", help="Prevalence per group of this piece column or metadata key (e.g. model), with "
            "the tests compare uses.")] = None,
        sample: Annotated[int | None, typer.Option(
            "--sample", min=1, help="Scan this many pieces drawn at random (with --seed).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed for --sample.")] = 0,
        run_dir: Annotated[Path | None, typer.Option(
            "--run-dir", "-d", help="Split the given transcript files into this run directory and scan "
            "its pieces.")] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Estimate calls, tokens and cost, and spend nothing.")] = False,
        max_cost: Annotated[float | None, typer.Option(
            "--max-cost", min=0.0, help="Stop sending once this many USD are spent; a rerun continues.")] = None,
        llm: Annotated[str | None, typer.Option("--llm", help="LLM backend (default: the run's).")] = None,
        model: Annotated[str | None, typer.Option("--model", help="LLM model (default: the run's).")] = None,
        base_url: Annotated[str | None, typer.Option(
            "--base-url", help="OpenAI-compatible server URL (default: the run's).")] = None,
        concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Parallel LLM calls.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and results.")] = False,
    ) -> None:
        """Ask one question of every piece: an answer, a verified quote and a reason per piece,
        and the prevalence with a Wilson interval, overall and per --by group. Calls go through
        the run's cache: a rerun sends nothing."""
        from featdisco.cli.run import log_line
        from featdisco.evidence.scan import run_scan

        if run_dir is None:
            if len(paths) != 1:
                raise FeatdiscoError("give one run directory, or transcript files with --run-dir DIR")
            target, inputs = paths[0], None
        else:
            target, inputs = run_dir, paths
        kinds = [k.strip() for spec in kind or [] for k in spec.split(",") if k.strip()] or None
        result = run_scan(target, question, cluster=cluster, kinds=kinds, name=name, answer=answer, by=by,
                          sample=sample, seed=seed, dry_run=dry_run, max_cost=max_cost, llm=llm, model=model,
                          base_url=base_url, concurrency=concurrency, inputs=inputs, log=log_line(quiet))
        if dry_run:
            console.print(f"dry run, scan: {result}")
            return
        console.print(f"scan {result.name}: {result.question}")
        console.print(f"prevalence {_pct(result.rate)} ({result.positives:,} of {result.n:,} pieces answered), "
                      f"95% CI {_pct(result.ci_low)}-{_pct(result.ci_high)}")
        if result.quotes:
            console.print(f"quotes: {result.quotes - result.unverified:,} of {result.quotes:,} found in their "
                          f"piece; {result.unverified:,} unverifiable (flagged verified=false)")
        if result.by is not None:
            table = Table(title=f"by {by}", show_edge=False)
            for col in ("group", "n", "positives", "rate", "95% CI", "q_value"):
                table.add_column(col, overflow="fold")
            for r in result.by.itertuples():
                table.add_row(str(r.group), f"{r.n:,}", f"{r.positives:,}", _pct(r.rate),
                              f"{_pct(r.ci_low)}-{_pct(r.ci_high)}", f"{r.q_value:.3g}")
            console.print(table)
        console.print("written: " + ", ".join(str(p) for p in result.paths))
        if result.failed or result.not_sent:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.failed_by_reason.items()))
            parts = []
            if result.failed:
                parts.append(f"{result.failed:,} calls failed ({reasons})")
            if result.not_sent:
                parts.append(f"{result.not_sent:,} not sent at the --max-cost cap")
            err_console.print(f"scan incomplete: {'; '.join(parts)}; those pieces are left out of the "
                              "prevalence; rerun the same command to retry them", markup=False)
            raise typer.Exit(FAILED_EXIT)
