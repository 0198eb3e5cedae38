"""Console objects shared by every command: results to stdout, progress and errors to stderr."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from featdisco.errors import FeatdiscoError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise FeatdiscoError(message)


PricesOpt = Annotated[Path | None, typer.Option(
    "--prices", envvar="FEATDISCO_PRICES", show_envvar=False,
    help="Price file (JSON or TOML: {\"MODEL\": {\"input\": USD, \"output\": USD}} per 1M tokens) adding to "
         "or overriding the built-in prices, so that the cost of any model (vLLM, Ollama, OpenRouter names) "
         "is known (env FEATDISCO_PRICES). The manifest records the price used.")]


INCOMPLETE_EXIT = 3  # calls failed or the cost cap stopped the work; rerunning the command resumes


def exit_if_failed(usage: Mapping[str, Any] | None, say: Callable[[str], None], what: str = "") -> None:
    """Exit with status 3 after saying how many LLM calls failed and why, when any did: one
    meaning for every command that calls an LLM (scripts tell a partial result this way)."""
    failed = int((usage or {}).get("failed") or 0)
    if not failed:
        return
    u = usage or {}
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted((u.get("failed_by_reason") or {}).items(),
                                                       key=lambda kv: -kv[1]))
    total = u.get("unique") or u.get("calls") or failed
    say(f"{what + ': ' if what else ''}{failed:,} of {total:,} LLM calls failed"
        f"{f' ({reasons})' if reasons else ''}; the results above leave them out. Rerun the same "
        "command to retry them (answered calls are cached).")
    raise typer.Exit(INCOMPLETE_EXIT)
