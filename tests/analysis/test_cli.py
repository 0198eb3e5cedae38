"""The analysis commands end to end on a planted run: tables printed, Parquet written,
user errors as one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from featdisco.cli import app
from tests.analysis.planted import PlantedPiece, write_run


def small_run(path: Path) -> Path:
    pieces = []
    for t in range(60):
        model = "a" if t % 2 else "b"
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [t % 3], model=model))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", [3 + (t % 3 == 0)] + ([5] if model == "a" else []),
                                   model=model))
    return write_run(path, pieces, [("user", "U0"), ("user", "U1"), ("user", "U2"), ("response", "R0"),
                                    ("response", "R1"), ("response", "Only in a")])


def test_commands_print_and_write(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    runner = CliRunner()
    for args, out in ((["frequency", str(run)], "analysis_frequency.parquet"),
                      (["probe", str(run), "--jobs", "1", "--min-positives", "5"], "analysis_probes.parquet"),
                      (["compare", str(run), "--by", "model"], "analysis_compare_model.parquet"),
                      (["cooccur", str(run), "--min-support", "3"], "analysis_cooccurrence.parquet")):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert out in result.output and (run / out).exists()
    result = runner.invoke(app, ["compare", str(run), "--by", "model"])
    assert "6 clusters compared by 'model'; 1 differ at FDR 0.05" in result.output
    top = pq.read_table(run / "analysis_compare_model.parquet").to_pylist()[0]
    assert top["label"] == "Only in a" and top["significant"] and top["count_high"] == 30


def test_help_and_one_line_errors(tmp_path: Path) -> None:
    for cmd in ("probe", "compare", "cooccur", "score-labels", "hierarchy", "stability", "frequency"):
        result = CliRunner().invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "run directory" in result.output.lower()
    run = small_run(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "featdisco", "compare", str(run), "--by", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no piece column or metadata key named 'nope'" in proc.stderr
