"""Console objects shared by every command: results to stdout, progress and errors to stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

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
         "or overriding the built-in prices, so that cost and --max-cost work for any model "
         "(env FEATDISCO_PRICES). The manifest records the price used.")]
