"""Nothing is lost without saying so (issue 13, item 3).

A file that yields no piece is an error naming the file and the likely fix, or under
``--skip-bad`` a skipped *file*, reported as such; a container cut short keeps the
complete records before the cut and says about how many were lost; a run whose every
record was skipped exits non-zero and writes nothing.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featdisco", *map(str, args)], capture_output=True,
                          text=True)


def test_forced_tabular_without_a_usable_mapping_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"q": "hi", "a": "hello"}] * 3)
    out = tmp_path / "o.parquet"
    proc = run_cli("split", path, "-o", out, "--format", "tabular")
    assert proc.returncode == 2, proc.stdout
    assert "t.jsonl, line 1:" in proc.stderr and "--map user=COLUMN,response=COLUMN" in proc.stderr
    skipped = run_cli("split", path, "-o", out, "--format", "tabular", "--skip-bad")
    assert skipped.returncode == 2 and "every record was skipped" in skipped.stderr
    assert not out.exists()


def test_an_unreadable_file_in_a_folder_is_a_skipped_file_not_a_record(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "good.jsonl", [GOOD] * 2)
    (tmp_path / "d" / "fake.jsonl.gz").write_text(json.dumps(GOOD) + "\n")  # not gzip at all
    proc = run_cli("split", tmp_path / "d", "-o", tmp_path / "o.parquet", "--skip-bad")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 pieces" in proc.stdout
    assert "skipped files: 1" in proc.stdout
    assert "fake.jsonl.gz: not a gzip file, though its name ends in .gz (rename it without .gz)" in proc.stdout
    assert "skipped bad records" not in proc.stdout


def cut(data: bytes, at: float) -> bytes:
    return data[: int(len(data) * at)]


def test_a_truncated_array_or_gzip_keeps_the_records_before_the_cut(tmp_path: Path) -> None:
    records = [{"id": f"r{i}", **GOOD} for i in range(400)]
    arr = tmp_path / "arr.json"
    arr.write_bytes(cut(json.dumps(records).encode(), 0.5))
    gz = tmp_path / "arr.json.gz"
    gz.write_bytes(cut(gzip.compress(json.dumps(records).encode()), 0.6))
    for path in (arr, gz):
        out = tmp_path / f"{path.name}.parquet"
        proc = run_cli("split", path, "-o", out, "--skip-bad")
        assert proc.returncode == 0, proc.stderr
        kept = pq.read_table(out).num_rows // 2
        assert 150 < kept < 400, kept
        assert f"{path.name}: cut short at record {kept + 1}" in proc.stdout, proc.stdout
        assert f"{kept:,} records kept" in proc.stdout


def test_corruption_mid_file_estimates_the_records_lost(tmp_path: Path) -> None:
    records = [{"id": f"r{i}", **GOOD} for i in range(2000)]
    data = bytearray(json.dumps(records).encode())
    mid = len(data) // 4
    data[mid:mid + 40] = b"}}}}]]]]" * 5  # broken JSON a quarter of the way in
    path = tmp_path / "broken.json"
    path.write_bytes(bytes(data))
    proc = run_cli("split", path, "-o", tmp_path / "o.parquet", "--skip-bad")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "cut short" in x)
    lost = int(line.split("about ")[1].split(" records lost")[0].replace(",", ""))
    assert 1000 < lost < 2000, line  # about three quarters of 2,000


def test_skip_bad_quiet_with_nothing_readable_exits_non_zero(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text(json.dumps(GOOD) + "\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("prompt,response\ncaf\xe9?,un caf\xe9\n".encode("latin-1"))
    for path, fix in ((fake, "rename it without .gz"), (latin, "re-save it as UTF-8")):
        out = tmp_path / "o.parquet"
        proc = run_cli("split", path, "-o", out, "--skip-bad", "-q")
        assert proc.returncode == 2, (path, proc.stdout, proc.stderr)
        assert "every record was skipped" in proc.stderr and fix in proc.stderr
        assert not out.exists()


def test_a_file_that_yields_no_piece_is_named_with_the_fix(tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "d" / "blank.jsonl",
                        [{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": " "}]}])
    write_jsonl(tmp_path / "d" / "good.jsonl", [GOOD])
    proc = run_cli("split", empty, "-o", tmp_path / "o.parquet")
    assert proc.returncode == 2
    assert "blank.jsonl: no user, thought or response text in 1 record read as openai" in proc.stderr
    ok = run_cli("split", tmp_path / "d", "-o", tmp_path / "o.parquet", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert "skipped files: 1" in ok.stdout and "blank.jsonl: no user, thought or response text" in ok.stdout


def test_an_empty_cell_in_a_detected_prompt_completion_table_is_an_empty_piece(tmp_path: Path) -> None:
    """A failed generation leaves a completion cell empty (null in Parquet). The table is read
    as with --map: that row's response is an empty piece, dropped and counted, rather than
    the whole read stopping on "no prompt/response columns recognised; name them with --map"."""
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,completion\nhi,hello\nwhy is the sky blue?,\n,orphan answer\n")
    out = tmp_path / "o.parquet"
    proc = run_cli("split", path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "no prompt/response columns recognised" not in proc.stderr + proc.stdout
    assert "empty pieces dropped: response 1, user 1" in proc.stdout + proc.stderr
    rows = pq.read_table(out, columns=["kind", "text"]).to_pylist()
    assert sorted((r["kind"], r["text"]) for r in rows) == [
        ("response", "hello"), ("response", "orphan answer"), ("user", "hi"), ("user", "why is the sky blue?")]


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path: Path) -> None:
    """Excel in many locales saves "CSV" with semicolons; the header reads as one column named
    "prompt;completion", and the advice "pass --format or --map" could not help."""
    path = tmp_path / "pairs.csv"
    path.write_text("prompt;completion\nhi;hello\n")
    proc = run_cli("split", path, "-o", tmp_path / "o.parquet")
    assert proc.returncode == 2
    assert "its cells separated by ';': featdisco reads comma-separated CSV, so re-save it with commas" in proc.stderr
    assert "pass --format or --map" not in proc.stderr


def test_a_run_folder_inside_the_inputs_is_left_out_and_said(tmp_path: Path) -> None:
    """`featdisco run logs/ --run-dir logs/run1` stopped on "logs/run1/manifest.json: cannot tell
    the transcript format"; once a run sat beside the data, --skip-bad read its pieces.parquet and
    pieces_uncut.parquet as transcripts: every transcript counted three times."""
    logs = tmp_path / "logs"
    logs.mkdir()
    chats = write_jsonl(logs / "chats.jsonl", [GOOD] * 3)
    first = run_cli("split", chats, "-o", logs / "run1" / "pieces.parquet")
    assert first.returncode == 0, first.stderr
    (logs / "run1" / "manifest.json").write_text(json.dumps({"config": {}, "stages": {"split": {}}}))
    (logs / "run1" / "pieces_uncut.parquet").write_bytes((logs / "run1" / "pieces.parquet").read_bytes())
    out = tmp_path / "o.parquet"
    for extra in ([], ["--skip-bad"]):
        proc = run_cli("split", logs, "-o", out, *extra)
        assert proc.returncode == 0, proc.stderr
        assert "from 3 transcripts" in proc.stdout, proc.stdout
        assert "skipped 1 featdisco run folders inside the inputs" in proc.stdout and str(logs / "run1") in proc.stdout
    named = run_cli("split", logs / "run1", "-o", out)
    assert named.returncode == 2 and "is a featdisco run folder, not transcripts: name its pieces" in named.stderr


def test_a_run_with_many_analyses_is_still_a_run_folder(tmp_path: Path) -> None:
    """A run's manifest has sorted keys: with enough analyses and artefacts, "stages" comes
    past the first 64 KB that the check used to look at, and the run was read as transcripts."""
    from featdisco.transcripts.sources import is_run_dir

    analyses = {f"compare_{i}": {"args": {"by": "x" * 200}, "files": [f"analysis_{i}.parquet"]} for i in range(400)}
    text = json.dumps({"analyses": analyses, "config": {}, "stages": {"split": {"complete": True}}}, sort_keys=True)
    assert text.index('"stages"') > 1 << 16
    (tmp_path / "manifest.json").write_text(text)
    assert is_run_dir(tmp_path)


def test_a_transcript_folder_with_a_manifest_of_another_tool_is_read(tmp_path: Path) -> None:
    """Any manifest.json that held the word "stages" (an eval harness's
    {"stages": ["generate", "judge"]}) made its folder a featdisco run: its transcripts were
    left out as "featdisco run folders inside the inputs", under --skip-bad too."""
    logs = tmp_path / "logs"
    (logs / "eval1").mkdir(parents=True)
    (logs / "eval1" / "manifest.json").write_text(json.dumps({"name": "eval 1", "stages": ["generate", "judge"]}))
    write_jsonl(logs / "eval1" / "chats.jsonl", [GOOD] * 3)
    proc = run_cli("split", logs, "-o", tmp_path / "o.parquet", "--skip-bad")
    assert proc.returncode == 0, proc.stderr
    assert "from 3 transcripts" in proc.stdout, proc.stdout
    assert "featdisco run folder" not in proc.stdout + proc.stderr
