"""The ``featdisco`` command: thin wrappers that parse flags, call the API and print.

User errors (:class:`FeatdiscoError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from featdisco.cli.common import console, err_console, fail
from featdisco.errors import FeatdiscoError

app = typer.Typer(
    name="featdisco",
    help="LLM-driven feature discovery: find out how a model behaves from its transcripts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("split")
def split_cmd(
    inputs: Annotated[list[Path], typer.Argument(
        help="Transcript files or folders: JSON, JSONL(.gz), Parquet, CSV, saved HF datasets, "
             "Inspect .eval logs. Folders are walked.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write, one row per piece.")],
    format: Annotated[str | None, typer.Option(
        "--format", "-f", help="Force a record format instead of detecting it "
        "(see `featdisco formats`).")] = None,
    map_: Annotated[str | None, typer.Option(
        "--map", help="Map table columns, e.g. user=prompt,response=output,model=generator "
        "(targets: user, response, thought, system, model, id).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Model name for records that do not name one.")] = None,
    meta: Annotated[str | None, typer.Option(
        "--meta", help="Record fields to keep as columns, comma-separated (dotted paths allowed).")] = None,
    questions: Annotated[Path | None, typer.Option(
        "--questions", help="MT-bench / Arena-Hard question file to join answers with "
        "(default: question.jsonl found beside the answers).")] = None,
    max_chars: Annotated[int | None, typer.Option(
        "--max-chars", min=1, help="Truncate longer pieces, marking them as truncated.")] = None,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Skip bad records (counted by reason) instead of stopping.")] = False,
    max_record_mb: Annotated[float, typer.Option(
        "--max-record-mb", min=0.001, help="Largest record accepted, in MB.")] = 16.0,
    stats: Annotated[bool, typer.Option("--stats", help="Print piece counts by kind and model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Split transcripts into user, thought and response pieces (one Parquet row each)."""
    from featdisco.cli.split import run_split

    run_split(inputs=inputs, output=output, format=format, mapping=map_, model=model, meta=meta,
              questions=questions, max_chars=max_chars, skip_bad=skip_bad,
              max_record_bytes=int(max_record_mb * 1e6), show_stats=stats, quiet=quiet)


@app.command("formats")
def formats_cmd() -> None:
    """List the transcript formats featdisco reads, in detection order."""
    from featdisco.transcripts.formats import FORMATS

    for spec in FORMATS.values():
        console.print(f"[bold]{spec.name:<20}[/bold] {spec.description}")


def _register_optional_apps() -> None:
    """Sub-commands whose modules land separately; each registers itself if present."""
    try:
        from featdisco.cli.models import models_app
    except ImportError:
        return
    app.add_typer(models_app, name="models")


_register_optional_apps()


def main() -> None:
    try:
        app()
    except FeatdiscoError as e:
        err_console.print(f"featdisco: error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("featdisco: interrupted; finished work is kept", markup=False)
        sys.exit(130)


__all__ = ["app", "fail", "main"]
