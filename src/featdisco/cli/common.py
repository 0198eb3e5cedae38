"""Console objects shared by every command: results to stdout, progress and errors to stderr."""

from __future__ import annotations

from typing import NoReturn

from rich.console import Console

from featdisco.errors import FeatdiscoError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise FeatdiscoError(message)
