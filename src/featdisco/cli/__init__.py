"""The ``featdisco`` command: thin wrappers that parse flags, call the API and print.

User errors (:class:`FeatdiscoError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import re
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from featdisco.cli import common as checks
from featdisco.cli.common import PricesOpt, console, err_console, fail
from featdisco.cli.reading import with_reading
from featdisco.cli.tables import CsvOpt, JsonOpt, Output
from featdisco.errors import FeatdiscoError
from featdisco.rundir import check_run_dir

if TYPE_CHECKING:
    from featdisco.transcripts.read import ReadOptions

app = typer.Typer(
    name="featdisco",
    help="LLM-driven feature discovery: find out how a model behaves from its transcripts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # docstrings are rewrapped, not shown with their source line breaks
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("split")
@with_reading
def split_cmd(
    inputs: Annotated[list[Path], typer.Argument(
        help="Transcript files or folders: JSON, JSONL(.gz), Parquet, CSV, saved HF datasets, "
             "Inspect .eval logs. Folders are walked.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write, one row per piece.")],
    questions: Annotated[Path | None, typer.Option(
        "--questions", help="MT-bench / Arena-Hard question file to join answers with "
        "(default: question.jsonl found beside the answers).")] = None,
    max_chars: Annotated[int | None, typer.Option(
        "--max-chars", min=1, help="Truncate longer pieces, marking them as truncated.")] = None,
    max_record_mb: Annotated[float, typer.Option(
        "--max-record-mb", min=0.001, help="Largest record accepted, in MB.")] = 16.0,
    stats: Annotated[bool, typer.Option("--stats", help="Print piece counts by kind and model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the piece counts per model as JSON lines "
                                        "(model, user, thought, response); messages go to stderr.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="The same as CSV with a header.")] = False,
    *, reading: ReadOptions,
) -> None:
    """Split transcripts into user, thought and response pieces (one Parquet row each)."""
    from featdisco.cli.split import run_split

    checks.readable_inputs([*inputs, *([questions] if questions else [])])
    checks.output_file(output)
    options = replace(reading, questions=[questions] if questions else [],
                      max_record_bytes=int(max_record_mb * 1e6))
    run_split(inputs=inputs, output=output, options=options, max_chars=max_chars, show_stats=stats,
              quiet=quiet, out=Output.of(json_, csv_))


InputsArg = Annotated[list[Path], typer.Argument(
    help="Transcript files or folders (any format `featdisco formats` lists).", show_default=False)]
LlmOpt = Annotated[str | None, typer.Option(
    "--llm", help="LLM backend: openai, anthropic or local (env FEATDISCO_LLM; default: openai when "
    "--base-url, FEATDISCO_BASE_URL or OPENAI_API_KEY is set, else anthropic when ANTHROPIC_API_KEY is, "
    "else the embedded local model).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="LLM model name (env FEATDISCO_MODEL).")]
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI-compatible server URL, e.g. a vLLM or Ollama server (env FEATDISCO_BASE_URL).")]
EmbedderOpt = Annotated[str | None, typer.Option(
    "--embedder", help="minilm-q8 (default, offline: MiniLM with int8 arithmetic, ~2x faster than minilm, the same clusters within k-means noise), minilm (the shipped MiniLM as it is), static (a Model2Vec model distilled from MiniLM: ~80x faster, lower quality; for very large runs), st:MODEL_PATH or api:MODEL.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and results.")]


RunInputsArg = Annotated[list[Path] | None, typer.Argument(
    help="Transcript files or folders. Leave out to rerun on the pieces already in --run-dir.",
    show_default=False)]
RunDirOpt = Annotated[Path, typer.Option("--run-dir", "-d", help="Run directory (created if needed).")]
RunClustersOpt = Annotated[str | None, typer.Option(
    "--clusters", "-k", help="Clusters per kind: a number, 'auto' (default: grows with the number "
    "of distinct features) or user=N,thought=N,response=N.")]
RunMinFeaturesOpt = Annotated[int | None, typer.Option(
    "--min-features", min=1, help="Fewest features per piece [default: the run's, else 10].",
    show_default=False)]
RunMaxFeaturesOpt = Annotated[int | None, typer.Option(
    "--max-features", min=1, help="Most features per piece [default: the run's, else 20].",
    show_default=False)]
RunMaxPieceTokensOpt = Annotated[int | None, typer.Option(
    "--max-piece-tokens", min=50, help="Longer pieces are truncated (with a marker) before featurizing "
    "[default: the run's, else 2000].", show_default=False)]
RunMaxCostOpt = Annotated[float | None, typer.Option(
    "--max-cost", min=0.0, help="Stop cleanly once this many USD are spent; finished work is kept "
    "(needs a known price: built in, or --prices).")]
RunBudgetOpt = Annotated[float | None, typer.Option(
    "--budget", min=0.0, help="The run's budget in USD over every invocation (run, transform, scan, "
    "score-labels, hierarchy); kept in the run, so later commands keep to it. Stops (exit 3) "
    "before a call would pass it; a higher --budget continues.")]
RunEvidenceOpt = Annotated[bool | None, typer.Option(
    "--evidence/--no-evidence", help="Ask the autorater for a verbatim quote per feature, checked "
    "against the piece (default, unless the run was made without); --no-evidence: plain features, "
    "fewer output tokens.", show_default=False)]
RunDryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Estimate calls, tokens and cost of featurizing (with and without evidence), "
    "and spend nothing.")]
RunConcurrencyOpt = Annotated[int | None, typer.Option(
    "--concurrency", min=1, help="Parallel LLM calls [default: the run's, else 64].", show_default=False)]
RunRpmOpt = Annotated[float | None, typer.Option("--rpm", min=0.0, help="Client-side requests-per-minute limit.")]
RunTpmOpt = Annotated[float | None, typer.Option("--tpm", min=0.0, help="Client-side tokens-per-minute limit.")]
RunSeedOpt = Annotated[int | None, typer.Option(
    "--seed", help="Seed for clustering and sampling [default: the run's, else 0].", show_default=False)]
RunMergeOpt = Annotated[bool | None, typer.Option(
    "--merge/--no-merge", help="After naming, merge clusters of a kind that describe the same "
    "behaviour (checked by the LLM; mapping in merges.parquet) [default: the run's, else merge].",
    show_default=False)]
RunRateBatchOpt = Annotated[int | None, typer.Option(
    "--rate-batch", min=0, help="Clusters per interest-rating call; 0: no rating (no interest column and "
    "no privacy flag; clusters are listed by size), which saves the slowest calls of a small run "
    "[default: the run's, else 10].", show_default=False)]
RunMaxCharsOpt = Annotated[int | None, typer.Option(
    "--max-chars", min=0, help="Cut longer pieces when splitting; a rerun without inputs cuts the stored "
    "transcripts' pieces again; 0: no cut [default: the run's, else no cut].", show_default=False)]
RunTopOpt = Annotated[int | None, typer.Option(
    "--top", min=0, help="Clusters of each kind to print (default 8; with --json/--csv: all).",
    show_default=False)]
RunShowPrivateOpt = Annotated[bool, typer.Option(
    "--show-private", help="Also print clusters flagged private or drawn from too few transcripts.")]
RunMinTranscriptsOpt = Annotated[int | None, typer.Option(
    "--min-transcripts", min=1, help="Hide clusters drawn from fewer than N distinct transcripts from the "
    "printed tables, --json and the report, so that none singles out one conversation; kept in the run's "
    "config as the default of later commands [default: the run's, else 1].", show_default=False)]
RunBatchOpt = Annotated[bool | None, typer.Option(
    "--batch/--no-batch", help="Send LLM calls through the provider's batch API (OpenAI Batch, Anthropic "
    "Message Batches): half price, results within 24 h. Stop any time; a rerun resumes polling "
    "the batches already submitted [default: the run's, else no batch].", show_default=False)]
RunBatchPollOpt = Annotated[float | None, typer.Option(
    "--batch-poll", min=0.1, help="Seconds between polls of submitted batches [default: the run's, else 30].",
    show_default=False)]
RunExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="Where featurize and embed run: local (asyncio, default) or ray "
    "(Ray Data; pip install 'featdisco[ray]'; RAY_ADDRESS picks a cluster) [default: the run's, else local].",
    show_default=False)]
RunPromptOpt = Annotated[list[str] | None, typer.Option(
    "--prompt", help="Your own prompt file for a stage, NAME=PATH (featurize, name, merge or rate; "
    "repeatable), with the packaged prompt's $placeholders; its text is part of the cache keys "
    "and the run keeps a copy.")]


@app.command("run")
@with_reading
def run_cmd(
    inputs: RunInputsArg = None,
    run_dir: RunDirOpt = Path("runs/latest"),
    llm: LlmOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    embedder: EmbedderOpt = None,
    clusters: RunClustersOpt = None,
    min_features: RunMinFeaturesOpt = None,
    max_features: RunMaxFeaturesOpt = None,
    max_piece_tokens: RunMaxPieceTokensOpt = None,
    max_cost: RunMaxCostOpt = None,
    budget: RunBudgetOpt = None,
    evidence: RunEvidenceOpt = None,
    dry_run: RunDryRunOpt = False,
    concurrency: RunConcurrencyOpt = None,
    rpm: RunRpmOpt = None,
    tpm: RunTpmOpt = None,
    seed: RunSeedOpt = None,
    merge: RunMergeOpt = None,
    rate_batch: RunRateBatchOpt = None,
    max_chars: RunMaxCharsOpt = None,
    top: RunTopOpt = None,
    show_private: RunShowPrivateOpt = False,
    min_transcripts: RunMinTranscriptsOpt = None,
    json_: JsonOpt = False,
    csv_: CsvOpt = False,
    batch: RunBatchOpt = None,
    batch_poll: RunBatchPollOpt = None,
    executor: RunExecutorOpt = None,
    prompt: RunPromptOpt = None,
    prices: PricesOpt = None,
    quiet: QuietOpt = False,
    *, reading: ReadOptions,
) -> None:
    """Discover behaviours: split, featurize, embed, cluster, name and rate, resumably.

    A rerun redoes only what changed: stages whose inputs, config and prompt are unchanged
    are skipped, and finished LLM calls come from the run's cache. Settings: a flag given
    now, else the run's (its manifest), else the default.
    """
    from featdisco.cli.run import parse_clusters, parse_prompts, run_pipeline
    from featdisco.llm.prices import PriceTable
    from featdisco.pipeline import DEFAULT, Pipeline, config_from_manifest, read_manifest
    from featdisco.rundir import MANIFEST

    checks.run_dir_for(run_dir, inputs)
    if (run_dir / MANIFEST).is_file() and (fitted := read_manifest(run_dir).get("fitted_run")):
        # fitting over a transform's output would mix its pieces, new clusters and totals with a new fit
        fail(f"{run_dir} holds a `featdisco transform` output (of {fitted}): give `run` another --run-dir")
    flags = dict(prompt_files=parse_prompts(prompt), llm=llm, model=model, base_url=base_url, embedder=embedder,
                 n_clusters=DEFAULT if clusters == "auto" else parse_clusters(clusters), min_features=min_features,
                 max_features=max_features, max_piece_tokens=max_piece_tokens,
                 max_chars=DEFAULT if max_chars == 0 else max_chars, evidence=evidence,
                 seed=seed, merge=merge, rate_batch=rate_batch, concurrency=concurrency, rpm=rpm, tpm=tpm, max_cost=max_cost, budget=budget,
                 batch=batch, batch_poll=batch_poll, executor=executor,
                 # absolute: the run keeps it, and a rerun from another directory must find it
                 prices=str(prices.absolute()) if prices else None, min_transcripts=min_transcripts)
    cfg = config_from_manifest(run_dir, flags, required=False, own_prompts=True)  # flag > manifest > default
    cfg.featurize_config()  # validates the feature bounds before any work
    PriceTable.for_run(cfg.prices)  # so does the price file
    Pipeline.load_prompts(cfg)  # a missing or malformed prompt file is an error before any work
    run_pipeline(inputs=inputs or None, run_dir=run_dir, cfg=cfg, read_options=reading, dry=dry_run,
                 quiet=quiet, top=top, out=Output.of(json_, csv_), show_private=show_private)


@app.command("status")
def status_cmd(run_dir: Annotated[Path, typer.Argument(help="Run directory.")] = Path("runs/latest"),
               json_: Annotated[bool, typer.Option("--json", help="Print one JSON object: stages, LLM totals "
                                                   "over every invocation and of the last one.")] = False) -> None:
    """Show a run's stages: done or not, time, calls, cost and counts, and the LLM totals of
    every invocation together and of the last one."""
    from featdisco.cli.run import show_status

    check_run_dir(run_dir)
    show_status(run_dir, json_)


@app.command("transform")
@with_reading
def transform_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A fitted run directory (or a saved dictionary).")],
    inputs: InputsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the new pieces, features, "
                                         "assignments and activations.npz.")],
    llm: Annotated[str | None, typer.Option(
        "--llm", help="LLM backend (default: the fitted run's, so that new features are worded alike).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="LLM model (default: the fitted run's).")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="OpenAI-compatible server URL (default: the fitted run's).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", min=1, help="Parallel LLM calls [default: the fitted run's, else 64].",
        show_default=False)] = None,
    prices: PricesOpt = None,
    no_evidence: Annotated[bool, typer.Option(
        "--no-evidence", help="Plain features without quotes (default: as the dictionary was fitted).")] = False,
    budget: Annotated[float | None, typer.Option(
        "--budget", min=0.0, help="Budget in USD over every transform into this output folder (default: "
        "the fitted run's); stops with exit 3 before a call would pass it.")] = None,
    quiet: QuietOpt = False,
    *, reading: ReadOptions,
) -> None:
    """Apply a fitted dictionary to new transcripts: featurize them, then send each feature
    to its nearest existing cluster."""
    from featdisco.cli.run import exit_if_transform_failed, log_line
    from featdisco.estimator import transform_into

    check_run_dir(run_dir, "fitted run")
    checks.run_dir_for(output, inputs, "-o")
    act = transform_into(run_dir, inputs, out_dir=output, read_options=reading,
                         overrides={"llm": llm, "model": model, "base_url": base_url,
                                    "concurrency": concurrency, "prices": str(prices.absolute()) if prices else None,
                                    "evidence": False if no_evidence else None, "budget": budget},
                         log=log_line(quiet))
    m = act.matrix
    active = int((m.getnnz(axis=1) > 0).sum())
    n_features = act.features.num_rows if act.features is not None else 0
    console.print(f"{m.shape[0]:,} pieces, {n_features:,} features; {active:,} pieces activate "
                  f"at least one of {act.n_clusters:,} clusters ({m.nnz:,} activations). Written to {output}/")
    from featdisco.analysis.provenance import edition_text
    from featdisco.rundir import RunDir

    if edition := RunDir(output).manifest.get("fitted_dictionary"):
        console.print(f"dictionary: the clusters of {run_dir}, {edition_text(edition)}", markup=False)
    from featdisco.cli.run import print_new_clusters

    print_new_clusters(output)
    exit_if_transform_failed(output, lambda msg: console.print(msg, markup=False))


@app.command("formats")
def formats_cmd() -> None:
    """List the transcript formats featdisco reads, in detection order."""
    from featdisco.transcripts.formats import FORMATS

    for spec in FORMATS.values():
        console.print(f"[bold]{spec.name:<20}[/bold] {spec.description}")


def _register_optional_apps() -> None:
    """Sub-commands whose modules land separately; each registers itself if present."""
    __import__("featdisco.cli.report", fromlist=["register"]).register(app)  # report, serve
    __import__("featdisco.cli.analysis", fromlist=["register"]).register(app)  # probe, compare, ...
    __import__("featdisco.cli.verify", fromlist=["register"]).register(app)  # validate, find
    __import__("featdisco.cli.scan", fromlist=["register"]).register(app)  # scan
    __import__("featdisco.cli.ask", fromlist=["register"]).register(app)  # ask
    __import__("featdisco.cli.edit", fromlist=["register"]).register(app)  # edit: curation
    __import__("featdisco.cli.demo", fromlist=["register"]).register(app)  # demo: the XSTest finding
    try:
        from featdisco.cli.models import models_app
    except ImportError:
        return
    app.add_typer(models_app, name="models")


_register_optional_apps()


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, ``kill``), raised like Ctrl-C so that every ``finally``
    runs: half-written artefacts are dropped, the caches closed, the run directory freed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _usage_errors_in_one_line() -> None:
    """A bad flag or value (``--top abc``, a missing argument) is one line naming it, exit 2,
    like every other user error, rather than click's usage, hint, blank line and error."""
    from typer._click.exceptions import UsageError  # click as typer ships it

    def show(self: UsageError, file: object = None) -> None:
        where = self.ctx.command_path if self.ctx is not None else "featdisco"
        # a subcommand's path holds its group's arguments as metavars ("edit {run_dir} split"):
        # name them as a person types them ("edit RUN_DIR split")
        where = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), where)
        err_console.print(f"featdisco: error: {self.format_message()} (see `{where} --help`)", markup=False)

    UsageError.show = show  # type: ignore[method-assign]


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    _usage_errors_in_one_line()
    try:
        app()
    except FeatdiscoError as e:
        code = getattr(e, "exit_code", 2)  # 3: stopped at the run's budget, as at --max-cost
        err_console.print(f"featdisco: {'error: ' if code == 2 else ''}{e}", markup=False, highlight=False,
                          soft_wrap=True)
        checks.remove_new_empty_dirs()  # a refused command leaves no empty run directory behind
        sys.exit(code)
    except KeyboardInterrupt as e:  # raised outside a command
        _interrupted(e)
    except SystemExit as e:
        # typer turns an interrupt inside a command into a silent exit 130
        cause = getattr(e.__context__, "__cause__", None)
        if e.code == 130 and isinstance(cause, KeyboardInterrupt):
            _interrupted(cause)
        raise


def _interrupted(e: KeyboardInterrupt) -> None:
    how = "stopped by SIGTERM" if isinstance(e, _Terminated) else "interrupted"
    err_console.print(f"featdisco: {how}; finished work is kept, and rerunning the same "
                      "command resumes", markup=False)
    sys.exit(143 if isinstance(e, _Terminated) else 130)


__all__ = ["app", "fail", "main"]
