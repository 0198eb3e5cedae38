"""Bad input: one clear line naming file and record, exit 2, no traceback; ``--skip-bad``
skips and counts by reason; nothing is half-written."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from tests.conftest import write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
GOOD_LINE = json.dumps(GOOD)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featdisco", *args], capture_output=True, text=True)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, the message fragment the error must contain)."""
    truncated = tmp / "trunc.jsonl.gz"
    lines = [json.dumps({"id": f"g{i}", **GOOD}) for i in range(2000)]
    full = gzip.compress(("\n".join(lines) + "\n").encode())
    truncated.write_bytes(full[: len(full) // 2])
    return {
        "malformed-json": (write_lines(tmp / "malformed.jsonl", [GOOD_LINE.encode(), b'{"messages": [}']),
                           "malformed.jsonl, line 2: malformed JSON (unexpected character, "
                           "expected a JSON value at column 15)"),

        "wrong-type": (write_jsonl(tmp / "types.jsonl", [GOOD, {"messages": [{"role": "user", "content": 7}]}]),
                       "types.jsonl, line 2: messages[0].content: expected a string or an array of parts, "
                       "got number"),
        "unknown-role": (write_jsonl(tmp / "roles.jsonl", [GOOD, {"messages": [{"role": "wizard",
                                                                               "content": "x"}]}]),
                         "roles.jsonl, line 2: messages[0].role 'wizard' is not one of"),
        "invalid-utf8": (write_lines(tmp / "utf8.jsonl", [GOOD_LINE.encode(),
                                                          b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}']),
                         "utf8.jsonl, line 2: invalid UTF-8"),
        "empty-file": (write_lines(tmp / "empty.jsonl", []), "empty.jsonl, file: file is empty"),
        "truncated-gzip": (truncated, "trunc.jsonl.gz, line "),
    }


@pytest.mark.parametrize("reason", ["malformed-json", "wrong-type", "unknown-role", "invalid-utf8",
                                    "empty-file", "truncated-gzip"])
def test_each_bad_input_is_one_clear_line_with_exit_2(tmp_path: Path, reason: str) -> None:
    path, fragment = bad_files(tmp_path)[reason]
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(app, ["split", str(path), "-o", str(out)])
    # CliRunner surfaces our error as the exception; the real entry point is checked below.
    assert result.exception is not None
    message = str(result.exception)
    assert fragment in message, message
    assert f"[{reason}]" in message
    assert not out.exists()  # nothing half-written


def test_a_record_cut_short_is_placed_where_it_ends(tmp_path: Path) -> None:
    """Not "column 1" of the line after it, as the parser sees the record's newline."""
    from featdisco.transcripts.sources import BadRecord, decode_json_object

    with pytest.raises(BadRecord, match=r"unexpected end of data at column 30\)"):
        decode_json_object(b'{"messages": [{"role": "user"\n')
    with pytest.raises(BadRecord, match=r"at line 2, column 7\)"):
        decode_json_object(b'{"a": 1,\n "b": }')


def test_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    path, _ = bad_files(tmp_path)["malformed-json"]
    proc = run_cli("split", str(path), "-o", str(tmp_path / "o.parquet"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("featdisco: error: ") and "malformed.jsonl, line 2" in lines[-1]
    assert "Traceback" not in proc.stderr
    missing = run_cli("split", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.parquet"))
    assert missing.returncode == 2 and "nope.jsonl does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_huge_record_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    big = {"messages": [{"role": "user", "content": "x" * (50 * 1024 * 1024)}]}
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        f.write(GOOD_LINE + "\n")
        f.write(json.dumps(big) + "\n")
        f.write(GOOD_LINE + "\n")
    proc = run_cli("split", str(path), "-o", str(tmp_path / "o.parquet"))
    assert proc.returncode == 2
    assert "big.jsonl, line 2: record is 52.4 MB, over the 16.0 MB limit" in proc.stderr
    ok = run_cli("split", str(path), "-o", str(tmp_path / "o.parquet"), "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert "wrote 4 pieces" in ok.stdout and "too-large 1" in ok.stdout
    raised = run_cli("split", str(path), "-o", str(tmp_path / "o2.parquet"), "--max-record-mb", "60", "-q")
    assert raised.returncode == 0, raised.stderr


def test_skip_bad_counts_by_reason_and_keeps_the_good(tmp_path: Path) -> None:
    files = bad_files(tmp_path)
    inputs = [str(p) for p, _ in files.values()]
    out = tmp_path / "out.parquet"
    proc = run_cli("split", *inputs, "-o", str(out), "--skip-bad")
    assert proc.returncode == 0, proc.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    # 1 good record in each of 4 files, plus the lines of the gzip before it was cut off.
    good_in_gzip = sum(1 for t in table.column("source").to_pylist() if t.endswith("trunc.jsonl.gz")) // 2
    assert good_in_gzip > 10
    assert table.num_rows == 2 * (4 + good_in_gzip)
    for reason in ("malformed-json 1", "wrong-type 1", "unknown-role 1", "invalid-utf8 1"):
        assert reason in proc.stdout
    # A file with nothing in it is a skipped file, and a cut-off gzip keeps what came before.
    assert "skipped files: 1" in proc.stdout and "empty.jsonl: file is empty [empty-file]" in proc.stdout
    assert f"trunc.jsonl.gz: cut short at line {good_in_gzip + 1}" in proc.stdout
    # Each skip is also logged with its location.
    assert "roles.jsonl, line 2: skipped" in proc.stderr


def test_bad_map_and_format_options(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [GOOD])
    for args, msg in [(["--map", "user"], "--map: 'user' is not TARGET=COLUMN"),
                      (["--map", "colour=x"], "unknown target 'colour'"),
                      (["--format", "xml"], "unknown format 'xml'")]:
        proc = run_cli("split", str(path), "-o", str(tmp_path / "o.parquet"), *args)
        assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr
    mapped = run_cli("split", str(path), "-o", str(tmp_path / "o.parquet"), "--map",
                     "user=prompt,response=output")
    assert mapped.returncode == 2 and "column 'prompt' (mapped to user) is missing" in mapped.stderr
