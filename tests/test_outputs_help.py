"""Issue 16 item 11: every command's --help says the truth: every option explains itself,
no help promises a default the command does not use, and the LLM commands name their real
defaults (transform uses the fitted run's LLM, not "local")."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from featdisco.cli import app


def commands() -> dict[str, Any]:
    """Every command and sub-command by name (typer's own click types: duck-typed)."""
    root: Any = typer.main.get_command(app)
    out: dict[str, Any] = {}
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
        else:
            out[name] = cmd
    return out


def test_every_option_of_every_command_has_help() -> None:
    bare = [f"{name} {p.opts[0]}" for name, cmd in commands().items() for p in cmd.params
            if p.param_type_name == "option" and not (getattr(p, "help", "") or "").strip() and p.name != "help"]
    assert bare == []


def test_help_names_the_defaults_each_command_uses() -> None:
    def help_of(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    transform = help_of("transform")
    assert "default local" not in transform and "default: the fitted run's" in transform
    run = help_of("run")
    assert "default local)" not in run and "OPENAI_API_KEY" in run  # how the backend is chosen
    assert "truncated (with a marker) before featurizing" in run
    for cmd in ("score-labels", "hierarchy"):
        text = help_of(cmd)
        assert "--max-cost" not in text  # they have no cost cap to make work
        assert "Parallel LLM calls (default: the run's)" in text
    for cmd, default in (("frequency", "10 per kind"), ("compare", "20"), ("cooccur", "20 per level"),
                         ("probe", "15"), ("stability", "10")):
        assert f"Rows to print (default {default}; with --json/--csv: all rows)" in help_of(cmd), cmd
    for name in commands():
        assert "default shown" not in help_of(*name.split())
