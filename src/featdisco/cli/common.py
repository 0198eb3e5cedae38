"""Console objects shared by every command: results to stdout, progress and errors to stderr."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from featdisco.errors import FeatdiscoError
from featdisco.rundir import MANIFEST, RUN_MARKS, check_run_dir

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise FeatdiscoError(message)


# Typed path checks, called first by every command on the paths it was given, so that a
# mistake is one line naming the path (exit 2) before anything is read or created. A run
# directory that must exist is checked by rundir.check_run_dir, the same test open_run and
# RunDir make.


_NEW_DIRS: list[tuple[Path, Path]] = []  # (directory, its nearest ancestor that existed before)


def remove_new_empty_dirs() -> None:
    """After a user error: remove the directories this command was to create, where they
    are still empty (``rmdir`` never removes anything else), so that a refused command
    leaves nothing behind (a dry run whose backend is missing used to leave an empty run)."""
    while _NEW_DIRS:
        path, stop = _NEW_DIRS.pop()
        while path != stop:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass  # never made, though the folders above it may have been
            except OSError:
                break  # not empty: keep it and what is above it
            path = path.parent


def new_or_existing_dir(path: Path, what: str = "run directory") -> Path:
    """A directory to write into: an existing directory, or a new one whose nearest existing
    ancestor is a writable directory. Checked, not created (the command creates it); if the
    command then fails with a user error, the CLI removes it again while empty."""
    if path.exists():
        if not path.is_dir():
            fail(f"{what} {path} is a file, not a directory; give a new or existing folder")
        if not os.access(path, os.W_OK | os.X_OK):
            fail(f"{what} {path} cannot be written (permission denied)")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        fail(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{what} {path} cannot be created in {parent} (permission denied)")
    _NEW_DIRS.append((path.absolute(), parent.absolute()))
    return path


def run_dir_to_write(path: Path, what: str = "--run-dir") -> Path:
    """A run directory that a command may create or add to: new, empty, or a run already."""
    check_run_dir(path, what, create=True)
    new_or_existing_dir(path, what)
    if path.is_dir() and not any((path / m).is_file() for m in RUN_MARKS) and any(
            p.name.endswith(".parquet") for p in path.iterdir()):
        fail(f"{what} {path} holds Parquet files but no {MANIFEST}: it is not a run; give a new folder")
    return path


def run_dir_for(run_dir: Path, inputs: list[Path] | None, what: str = "--run-dir") -> Path:
    """The run directory of a command that splits ``inputs`` into it (new or existing; the
    inputs must be readable) or, given no inputs, works on a run already made."""
    if not inputs:
        return check_run_dir(run_dir, what)
    readable_inputs(inputs)
    return run_dir_to_write(run_dir, what)


def readable_file(path: Path, what: str = "file") -> Path:
    """An input file that must exist and open for reading."""
    if path.is_symlink() and not path.exists():
        fail(f"{what} {path} is a broken link (to {os.readlink(path)})")
    if not path.exists():
        fail(f"{what} {path} does not exist")
    if path.is_dir():
        fail(f"{what} {path} is a directory, not a file")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as e:
        fail(f"{what} {path} cannot be read ({e.strerror or e})")
    return path


def readable_inputs(paths: Iterable[Path], what: str = "input") -> list[Path]:
    """Transcript inputs: files that open for reading, or folders that can be listed."""
    out = []
    for path in paths:
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                fail(f"{what} {path} cannot be read (permission denied)")
        elif path.exists() or path.is_symlink():
            readable_file(path, what)
        else:
            fail(f"{what} {path} does not exist")
        out.append(path)
    return out


def output_file(path: Path, what: str = "-o") -> Path:
    """A file to write: not a directory, in a folder that exists or can be created."""
    if path.is_dir():
        fail(f"{what} {path} is a directory; give a file name")
    new_or_existing_dir(path.parent, f"{what} {path}: folder")
    return path


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
