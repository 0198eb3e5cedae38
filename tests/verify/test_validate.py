"""``featdisco validate`` on a planted run and a scan written by hand: the figures equal
hand-computed ones, and every bad row of a labels file is named by file and line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.evidence.validate import validate
from tests.analysis.planted import PlantedPiece, write_run

# The scan's answer per response piece t0..t10 (t11 is not scanned; t10's call failed).
SCAN = [True, True, True, True, True, True, False, False, False, False, None]
# The person's truth on the same pieces: t0-t3 tp, t4-t5 fp, t6 fn, t7-t9 tn.
TRUTH = [True, True, True, True, False, False, True, False, False, False, True]


def planted(tmp_path: Path) -> Path:
    """12 transcripts: a user turn (cluster 0) and a response in cluster 1 (t0-t5) or 2."""
    pieces = []
    for t in range(12):
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [0]))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", [1 if t < 6 else 2]))
    run = write_run(tmp_path / "run", pieces, [("user", "Greets"), ("response", "Budget talk"),
                                               ("response", "Other")])
    pq.write_table(pa.table({
        "piece_id": [f"t{t}:1:response" for t in range(11)],
        "transcript_id": [f"t{t}" for t in range(11)],
        "kind": ["response"] * 11,
        "answer": pa.array(SCAN, pa.bool_()),
        "quote": [""] * 11, "span": pa.array([None] * 11, pa.struct([("start", pa.int32()), ("end", pa.int32())])),
        "verified": pa.array([None] * 11, pa.bool_()),
        "reason": ["r"] * 11,
        "status": ["ok"] * 10 + ["failed: timeout"],
    }), run / "scan_budget.parquet")
    return run


def good_labels(path: Path) -> Path:
    rows = ["piece_id,target,label"]
    rows += [f"t{t}:1:response,scan:budget,{str(v).lower()}" for t, v in enumerate(TRUTH)]
    # cluster 1 holds t0-t5: t0, t1 tp; t2 fp; t6 fn; t7, t8 tn
    rows += ["t0:1:response,cluster:response:1,true", "t1:1:response,cluster:response:1,TRUE",
             "t2:1:response,cluster:response:1,false", "t6:1:response,cluster:response:1,yes",
             "t7:1:response,cluster:response:1,no", "t8:1:response,cluster:response:1,0"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_figures_equal_hand_computed(tmp_path: Path) -> None:
    run = planted(tmp_path)
    df = validate(run, good_labels(tmp_path / "labels.csv"))
    assert df["target"].tolist() == ["scan:budget", "cluster:response:1"]
    scan, cluster = df.to_dict(orient="records")
    assert (scan["tp"], scan["fp"], scan["fn"], scan["tn"], scan["n"]) == (4, 2, 1, 3, 10)
    assert scan["unanswered"] == 1  # t10's call failed: counted, not scored
    assert scan["precision"] == pytest.approx(4 / 6)
    assert scan["recall"] == pytest.approx(4 / 5)
    assert scan["agreement"] == pytest.approx(7 / 10)
    assert scan["f1"] == pytest.approx(8 / 11)
    # chance agreement pe = (6*5 + 4*5) / 100 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5)
    assert scan["kappa"] == pytest.approx(0.4)
    # Wilson 95% intervals, worked out by hand from the score formula
    assert (scan["precision_low"], scan["precision_high"]) == pytest.approx((0.299993, 0.903229), abs=1e-5)
    assert (scan["recall_low"], scan["recall_high"]) == pytest.approx((0.375535, 0.963776), abs=1e-5)
    assert (scan["agreement_low"], scan["agreement_high"]) == pytest.approx((0.396778, 0.892209), abs=1e-5)
    assert (cluster["tp"], cluster["fp"], cluster["fn"], cluster["tn"]) == (2, 1, 1, 2)
    assert cluster["precision"] == pytest.approx(2 / 3) and cluster["recall"] == pytest.approx(2 / 3)
    assert cluster["kappa"] == pytest.approx(1 / 3)  # pe = (3*3 + 3*3) / 36 = 0.5
    assert (cluster["precision_low"], cluster["precision_high"]) == pytest.approx((0.20766, 0.938508), abs=1e-5)
    stored = pq.read_table(run / "analysis_validation_labels.parquet").to_pylist()  # one per label file
    assert [r["tp"] for r in stored] == [4, 2] and stored[0]["kappa"] == pytest.approx(0.4)
    # another label file is another validation: the first one is kept beside it
    validate(run, good_labels(tmp_path / "second.csv"))
    assert (run / "analysis_validation_labels.parquet").exists()
    assert (run / "analysis_validation_second.parquet").exists()


def test_two_annotators_files_of_one_name_are_two_validations(tmp_path: Path) -> None:
    """alice/labels.csv then bob/labels.csv: the second used to replace the first's stored
    result (both analysis_validation_labels) without a word; the same file again refreshes it."""
    run = planted(tmp_path)
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    validate(run, good_labels(tmp_path / "alice" / "labels.csv"))
    first = (run / "analysis_validation_labels.parquet").read_bytes()
    validate(run, good_labels(tmp_path / "bob" / "labels.csv"))
    assert (run / "analysis_validation_labels.parquet").read_bytes() == first
    names = sorted(k for k in json.loads((run / "manifest.json").read_text())["analyses"] if k.startswith("validation"))
    assert len(names) == 2 and names[0] == "validation_labels" and names[1].startswith("validation_labels_")
    validate(run, tmp_path / "alice" / "labels.csv")  # alice's again: her result, refreshed in place
    assert len([k for k in json.loads((run / "manifest.json").read_text())["analyses"]
                if k.startswith("validation")]) == 2

def test_every_bad_row_named_by_file_and_line(tmp_path: Path) -> None:
    run = planted(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([
        "piece_id,target,label",
        "t0:1:response,scan:budget,true",
        "t2:1:response,scan:budget,true",  # 3 fine
        "t0:1:response,scan:nope,true",  # 4 unknown scan
        "t1:1:response,scan:budget,maybe",  # 5 bad label
        "t1:1:response,scan:budget",  # 6 two fields
        "t0:1:response,cluster:user:1,true",  # 7 cluster 1 is a response cluster
        "t0:0:user,cluster:response:1,false",  # 8 a user piece cannot be in a response cluster
        "t3:1:response,scan:budget,true",  # 9 fine
        "t0:1:response,scan:budget,false",  # 10 labelled twice
        "t0:1:response,cluster:response:9,true",  # 11 no such cluster
        "t0:1:response,budget,true",  # 12 not a target
    ]) + "\n")
    with pytest.raises(FeatdiscoError) as e:
        validate(run, bad)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: 8 bad rows: ")
    for line, text in ((4, "unknown target 'scan:nope' (this run's scans: scan:budget)"),
                       (5, "label 'maybe' is not true or false"), (6, "expected 3 fields"),
                       (7, "unknown target 'cluster:user:1': cluster 1 is a response cluster"), (8, "piece 't0:0:user' is a user piece; cluster:response:1 holds only response"),
                       (10, "piece 't0:1:response' is labelled for scan:budget again (first on line 2)"),
                       (11, "unknown target 'cluster:response:9': the run has no cluster 9"), (12, "unknown target 'budget': use scan:<name>")):
        assert f"line {line}: {text}" in msg, (line, msg)
    assert "line 2:" not in msg and "line 3:" not in msg and "line 9:" not in msg
    assert not list(run.glob("analysis_validation*.parquet"))


def test_cli_prints_writes_and_fails_in_one_line(tmp_path: Path) -> None:
    run = planted(tmp_path)
    result = CliRunner().invoke(app, ["validate", str(run), str(good_labels(tmp_path / "l.csv"))])
    assert result.exit_code == 0, result.output
    assert "16 labels checked against 2 targets" in result.output
    assert "scan:budget: 1 labelled pieces have no answer" in result.output
    assert "0.67" in result.output and "[0.30," in result.output  # precision and its interval
    assert "analysis_validation_l.parquet" in result.output
    result = CliRunner().invoke(app, ["validate", str(run), str(tmp_path / "l.csv"), "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["target"] for r in rows] == ["scan:budget", "cluster:response:1"] and rows[0]["tp"] == 4
    assert rows[0]["kappa"] == pytest.approx(0.4) and "precision_low" in rows[0]
    (tmp_path / "x.csv").write_text("t0:1:response,scan:budget,perhaps\n")
    proc = subprocess.run([sys.executable, "-m", "featdisco", "validate", str(run), str(tmp_path / "x.csv")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "x.csv: 1 bad row: line 1: label 'perhaps' is not true or false" in proc.stderr


def test_kappa_undefined_when_both_say_one_class(tmp_path: Path) -> None:
    run = planted(tmp_path)
    labels = tmp_path / "l.csv"
    labels.write_text("t0:1:response,scan:budget,true\nt1:1:response,scan:budget,true\n")
    row = validate(run, labels, write=False).iloc[0]
    assert row["agreement"] == 1.0 and math.isnan(row["kappa"]) and math.isnan(row["f1"]) is False


def test_scale_scan_counts_positives_as_scan_does(tmp_path: Path) -> None:
    """A scale:1-10 scan: an answer above the midpoint 5.5 is a yes, as scan counted it."""
    from featdisco.rundir import RunDir

    run = planted(tmp_path)
    pq.write_table(pa.table({
        "piece_id": [f"t{t}:1:response" for t in range(4)], "transcript_id": [f"t{t}" for t in range(4)],
        "kind": ["response"] * 4, "answer": pa.array([9, 6, 5, 1], pa.int32()), "quote": [""] * 4,
        "span": pa.array([None] * 4, pa.struct([("start", pa.int32()), ("end", pa.int32())])),
        "verified": pa.array([None] * 4, pa.bool_()), "reason": ["r"] * 4, "status": ["ok"] * 4,
    }), run / "scan_howmuch.parquet")
    labels = tmp_path / "l.csv"
    labels.write_text("".join(f"t{t}:1:response,scan:howmuch,{v}\n"
                              for t, v in enumerate(["true", "false", "true", "false"])))
    with pytest.raises(FeatdiscoError, match="does not say how scan 'howmuch' answers"):
        validate(run, labels)
    RunDir(run).update(scans={"howmuch": {"question": "How much?", "answer": "scale:1-10"}})
    row = validate(run, labels).iloc[0]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (1, 1, 1, 1)  # 9 yes/true, 6 yes/false, 5 no/true


def test_columns_read_by_name_in_any_order(tmp_path: Path) -> None:
    """A header in another order, with a column of notes: the same figures as the plain file."""
    run = planted(tmp_path)
    plain = validate(run, good_labels(tmp_path / "labels.csv"), write=False)
    rows = (tmp_path / "labels.csv").read_text().splitlines()[1:]
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("label,note,target,piece_id\n" + "".join(
        f"{lab},seen twice,{target},{pid}\n" for pid, target, lab in (r.split(",") for r in rows)))
    df = validate(run, shuffled, write=False)
    assert df[["target", "tp", "fp", "fn", "tn"]].values.tolist() == plain[["target", "tp", "fp", "fn", "tn"]].values.tolist()


def test_a_header_without_a_column_names_it(tmp_path: Path) -> None:
    run = planted(tmp_path)
    labels = tmp_path / "l.csv"
    labels.write_text("piece,target,verdict\nt0:1:response,scan:budget,true\n")
    with pytest.raises(FeatdiscoError, match=r"l.csv, line 1: the header has no column 'piece_id', 'label'"):
        validate(run, labels)


def test_rows_that_match_nothing_are_counted_and_named_not_dropped(tmp_path: Path) -> None:
    run = planted(tmp_path)
    labels = tmp_path / "l.csv"
    labels.write_text("piece_id,target,label\n" + "".join(f"t{t}:1:response,scan:budget,true\n" for t in range(4))
                      + "nope:1:response,scan:budget,true\n"  # line 6: no such piece
                      + "t11:1:response,scan:budget,false\n")  # line 7: the scan did not ask about it
    df = validate(run, labels, write=False)
    assert int(df["n"].sum()) == 4
    assert [line for line, _ in df.attrs["unmatched"]] == [6, 7]
    result = CliRunner().invoke(app, ["validate", str(run), str(labels)])
    assert result.exit_code == 0, result.output
    assert (f"{labels}: 2 rows matched nothing in the run and were not counted: line 6: unknown piece "
            "'nope:1:response'") in result.output
    assert "line 7: piece 't11:1:response' was not scanned by scan:budget" in result.output
    labels.write_text("nope:1:response,scan:budget,true\n")
    with pytest.raises(FeatdiscoError, match=r"l\.csv: no row matched the run .*line 1: unknown piece"):
        validate(run, labels)
