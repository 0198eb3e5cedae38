"""Issue 16 item 5: every table is machine-readable (--json, --csv) and readable anywhere
(not squeezed into 80 columns when piped), cluster tables show the cluster id, and integer
sizes print as integers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from tests.analysis.planted import PlantedPiece, write_run

LONG = "Pirate speech with many nautical idioms and a parrot on the shoulder"


def run_with_long_label(path: Path) -> Path:
    pieces = []
    for t in range(60):
        model = "a" if t % 2 else "b"
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [t % 2], model=model))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", [2] + ([3] if model == "a" else []), model=model))
    return write_run(path, pieces, [("user", "U0"), ("user", "U1"), ("response", "R0"), ("response", LONG)])


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return run_with_long_label(tmp_path / "run")


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_rows_are_keyed_like_the_parquet(run: Path) -> None:
    out = invoke("compare", str(run), "--by", "model", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    stored = pq.read_table(run / "analysis_compare_model.parquet")
    assert len(rows) == stored.num_rows and set(rows[0]) == set(stored.column_names)
    assert rows[0]["label"] == LONG and rows[0]["cluster_id"] == 3 and rows[0]["count_high"] == 30


def test_csv_has_a_header_and_every_row(run: Path) -> None:
    out = invoke("frequency", str(run), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and rows[0].keys() >= {"cluster_id", "label", "pieces", "piece_rate"}
    assert {r["label"] for r in rows} == {"U0", "U1", "R0", LONG}
    assert all(r["pieces"].isdigit() for r in rows)


def test_top_limits_machine_rows_and_json_and_csv_exclude_each_other(run: Path) -> None:
    out = invoke("cooccur", str(run), "--min-support", "3", "--json", "--top", "1")
    levels = [json.loads(line)["level"] for line in out.splitlines()]
    assert sorted(levels) == ["piece", "transcript"]  # one row per level, as in the tables
    result = CliRunner().invoke(app, ["frequency", str(run), "--json", "--csv"])
    assert "cannot be combined" in str(result.exception)  # main() prints it, exit status 2


def test_piped_tables_are_not_squeezed_and_show_the_cluster_id(run: Path) -> None:
    out = invoke("compare", str(run), "--by", "model")
    assert LONG in out  # one line, not folded "Pira / te / spee / ch"
    header = next(line for line in out.splitlines() if "label" in line)
    assert "cluster_id" in header
    row = next(line for line in out.splitlines() if LONG in line)
    assert [c.strip() for c in row.split("│")][1] == "3"
    co = invoke("cooccur", str(run), "--min-support", "3")
    assert "cluster_a" in co and LONG in co


def test_labels_are_printed_as_text_not_markup(tmp_path: Path) -> None:
    pieces = [PlantedPiece(f"t{t}", 0, "user", [0]) for t in range(5)]
    run = write_run(tmp_path / "run", pieces, [("user", "Uses [bold]tags[/bold]")])
    assert "Uses [bold]tags[/bold]" in invoke("frequency", str(run))


def test_compare_by_any_piece_column_or_metadata_path_keeps_each(tmp_path: Path) -> None:
    """Issue 16 item 3: `compare --by source` (a column kept on disk), a metadata key and a
    nested metadata path all work, and each comparison has its own file."""
    import pyarrow as pa

    pieces = []
    for t in range(40):
        meta = {"judge": {"verdict": "pass" if t % 2 else "fail"}, "split": "a" if t < 20 else "b"}
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [0], metadata=meta))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", [1] + ([2] if t % 2 else []), metadata=meta))
    run = write_run(tmp_path / "run", pieces, [("user", "U"), ("response", "R"), ("response", "Only passing")])
    table = pq.read_table(run / "pieces.parquet")
    sources = [f"file{int(tid[1:]) % 2}.jsonl" for tid in table.column("transcript_id").to_pylist()]
    pq.write_table(table.append_column("source", pa.array(sources)), run / "pieces.parquet")
    for by, name in (("source", "compare_source"), ("split", "compare_split"),
                     ("metadata.judge.verdict", "compare_metadata_judge_verdict")):
        out = invoke("compare", str(run), "--by", by, "--json")
        rows = [json.loads(line) for line in out.splitlines()]
        assert rows and all(r["by"] == by for r in rows)
        assert (run / f"analysis_{name}.parquet").exists() and (run / f"analysis_{name}_rates.parquet").exists()
        if by != "split":  # the planted difference: only passing (odd) transcripts have cluster 2
            assert rows[0]["cluster_id"] == 2 and rows[0]["significant"]
    assert len(list(run.glob("analysis_compare_*_rates.parquet"))) == 3


def test_a_kind_only_one_group_has_is_not_compared_with_itself(tmp_path: Path) -> None:
    """Only model 'a' thinks: its thought clusters were compared 'a' against 'a' (ratio 1,
    p = 1) and drawn as [0, 1] intervals for 'b'; now they are left out, and said so."""
    pieces = []
    for t in range(30):
        model = "a" if t % 2 else "b"
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [0], model=model))
        if model == "a":
            pieces.append(PlantedPiece(f"t{t}", 1, "thought", [1], model=model))
        pieces.append(PlantedPiece(f"t{t}", 2, "response", [2 + (t % 3 == 0)], model=model))
    run = write_run(tmp_path / "run", pieces, [("user", "U"), ("thought", "T"), ("response", "R0"), ("response", "R1")])
    result = CliRunner().invoke(app, ["compare", str(run), "--by", "model"])
    assert result.exit_code == 0, result.output
    assert "thought clusters not compared: only a has thought pieces" in result.output
    kinds = set(pq.read_table(run / "analysis_compare_model.parquet").column("kind").to_pylist())
    assert kinds == {"user", "response"}


def test_equal_rates_still_name_two_groups(tmp_path: Path) -> None:
    pieces = [PlantedPiece(f"t{t}", 0, "user", [0], model="a" if t % 2 else "b") for t in range(20)]
    run = write_run(tmp_path / "run", pieces, [("user", "Everywhere")])
    row = json.loads(invoke("compare", str(run), "--by", "model", "--json").splitlines()[0])
    assert {row["group_high"], row["group_low"]} == {"a", "b"} and row["rate_ratio"] == 1.0
