"""``featdisco scan``: ask one question of every piece and measure the answer's prevalence."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from featdisco.cli.common import (
    INCOMPLETE_EXIT,
    PricesOpt,
    exit_if_failed,
    run_dir_for,
)
from featdisco.cli.reading import with_reading
from featdisco.cli.tables import CsvOpt, JsonOpt, Output
from featdisco.errors import FeatdiscoError
from featdisco.rundir import check_run_dir

if TYPE_CHECKING:
    from featdisco.evidence.scan import ScanResult
    from featdisco.transcripts.read import ReadOptions


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


PathsArg = Annotated[list[Path], typer.Argument(
    help="A run directory; or, with --run-dir, transcript files to split into it first.", show_default=False)]
QuestionOpt = Annotated[str | None, typer.Option(
    "--question", help="The question asked of each piece, e.g. \"Does the model reason about "
    "its remaining token budget?\"")]
ClusterOpt = Annotated[int | None, typer.Option(
    "--cluster", help="Ask whether each piece shows this cluster's behaviour (its label and "
    "description become the question; its kind the default --kind).")]
KindOpt = Annotated[list[str] | None, typer.Option(
    "--kind", help="Piece kinds to scan: user, thought, response (repeatable or comma-separated; "
    "default all).")]
NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Name of the scan's outputs, scan_NAME.parquet (default: from the question, with a "
                   "digest of it added when another question of the run took that name).")]
AnswerOpt = Annotated[str, typer.Option(
    "--answer", help="bool (a JSON boolean), scale:LOW-HIGH (positive above the midpoint) or "
    "labels:A,B,... (positive: the first label).")]
ByOpt = Annotated[str | None, typer.Option(
    "--by", help="Prevalence per group of this piece column or metadata key (e.g. model), with "
    "the tests compare uses.")]
SampleOpt = Annotated[int | None, typer.Option(
    "--sample", min=1, help="Scan this many pieces drawn at random (with --seed).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for --sample.")]
MethodOpt = Annotated[str, typer.Option(
    "--method", help="decide: every piece answers alone first, then the positives give their quote "
    "and reason (the same answers, fewer output tokens); single: one full reply per piece; answer: "
    "the answers alone, no quotes (decide's answers, fewest calls).")]
ScanPromptOpt = Annotated[int | None, typer.Option(
    "--scan-prompt", min=1, help="Packaged scan prompt version: 1 (default) judges the piece alone; "
    "2 also shows a response the user's request and asks what the response does; 3 is 1 with rules "
    "for reading a question and worked examples (steadier over wordings, lower at best: the README).")]
RewriteOpt = Annotated[bool | None, typer.Option(
    "--rewrite/--no-rewrite", help="First have the LLM rewrite the question (one call per piece kind, "
    "cached) into a question about the piece's own text, and ask that; the rewrite is shown and kept "
    "in the manifest. Default: off (with the embedded 1.5B model it did not make answers agree with "
    "people across wordings; see the README's XSTest figures).", show_default=False)]
RequireQuoteOpt = Annotated[bool, typer.Option(
    "--require-quote", help="Count a yes only when its quote is found verbatim in the piece.")]
RunDirOpt = Annotated[Path | None, typer.Option(
    "--run-dir", "-d", help="Split the given transcript files into this run directory and scan its pieces.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Estimate calls, tokens and cost, and spend nothing.")]
MaxCostOpt = Annotated[float | None, typer.Option(
    "--max-cost", min=0.0, help="Stop sending once this many USD are spent; a rerun continues.")]
LlmOpt = Annotated[str | None, typer.Option("--llm", help="LLM backend (default: the run's).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="LLM model (default: the run's).")]
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI-compatible server URL (default: the run's).")]
ConcurrencyOpt = Annotated[int | None, typer.Option("--concurrency", min=1, help="Parallel LLM calls.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and results.")]


def _scan_target(paths: list[Path], run_dir: Path | None) -> tuple[Path, list[Path] | None]:
    """The run directory to scan, and the transcript files to split into it first (if any)."""
    if run_dir is None:
        if len(paths) != 1:
            raise FeatdiscoError("give one run directory, or transcript files with --run-dir DIR")
        return check_run_dir(paths[0]), None
    return run_dir_for(run_dir, paths), paths


def _print_scan(out: Output, result: ScanResult, by: str | None) -> None:
    """The prevalence (overall or per --by group), the quotes verified, and where it went."""
    out.say(f"scan {result.name}: {result.question}")
    for kind, asked in result.asked.items():
        if asked != result.question:
            out.say(f"asked of each {kind} as: {asked}")
    out.say(f"prevalence {_pct(result.rate)} ({result.positives:,} of {result.n:,} pieces answered), "
            f"95% CI {_pct(result.ci_low)}-{_pct(result.ci_high)}"
            + (f"; counted as positive: {result.counts_as}" if result.counts_as else ""))
    if result.quotes:
        out.say(f"quotes: {result.quotes - result.unverified:,} of {result.quotes:,} found in their "
                f"piece; {result.unverified:,} unverifiable (flagged verified=false)")
    overall = [{"group": "(all)", "n": result.n, "positives": result.positives, "rate": result.rate,
                "ci_low": result.ci_low, "ci_high": result.ci_high}]
    rows = result.by if result.by is not None else overall
    out.rows(rows, ["group", "n", "positives", "rate", "ci_low", "ci_high", "q_value"],
             f"by {by}" if by else "overall")
    out.say("written: " + ", ".join(str(p) for p in result.paths))


@with_reading
def scan_cmd(
    paths: PathsArg,
    question: QuestionOpt = None,
    cluster: ClusterOpt = None,
    kind: KindOpt = None,
    name: NameOpt = None,
    answer: AnswerOpt = "bool",
    by: ByOpt = None,
    sample: SampleOpt = None,
    seed: SeedOpt = 0,
    method: MethodOpt = "decide",
    scan_prompt: ScanPromptOpt = None,
    require_quote: RequireQuoteOpt = False,
    rewrite: RewriteOpt = None,
    run_dir: RunDirOpt = None,
    dry_run: DryRunOpt = False,
    max_cost: MaxCostOpt = None,
    llm: LlmOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    prices: PricesOpt = None,
    json_: JsonOpt = False,
    csv_: CsvOpt = False,
    quiet: QuietOpt = False,
    *, reading: ReadOptions,
) -> None:
    """Ask one question of every piece: an answer, a verified quote and a reason per piece,
    and the prevalence with a Wilson interval, overall and per --by group. Calls go through
    the run's cache: a rerun sends nothing."""
    from featdisco.cli.run import log_line
    from featdisco.evidence.scan import run_scan

    target, inputs = _scan_target(paths, run_dir)
    out = Output.of(json_, csv_)
    kinds = [k.strip() for spec in kind or [] for k in spec.split(",") if k.strip()] or None
    result = run_scan(target, question, cluster=cluster, kinds=kinds, name=name, answer=answer, by=by,
                      sample=sample, seed=seed, dry_run=dry_run, max_cost=max_cost, llm=llm, model=model,
                      base_url=base_url, concurrency=concurrency, prices=str(prices) if prices else None,
                      inputs=inputs, log=log_line(quiet), read_options=reading, method=method,
                      require_quote=require_quote, prompt_version=scan_prompt, rewrite=rewrite)
    if dry_run:
        out.say(f"dry run, scan: {result}")
        return
    _print_scan(out, result, by)
    exit_if_failed(result.llm, out.say, "scan")
    if result.not_sent:
        out.say(f"scan: {result.not_sent:,} pieces not sent at the --max-cost cap; they are left out of "
                "the prevalence. Rerun with a higher cap to continue (answered calls are cached).")
        raise typer.Exit(INCOMPLETE_EXIT)


def register(app: typer.Typer) -> None:
    """Add ``scan`` to the featdisco command."""
    app.command("scan")(scan_cmd)
