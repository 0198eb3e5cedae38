"""Where a problem is placed, and what a user is told (issue 13, item 6): a bad byte in a
CSV is placed on its own line; a ``--meta`` field no record has is a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import write_jsonl


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featdisco", *map(str, args)], capture_output=True,
                          text=True)


def test_a_bad_byte_in_a_csv_is_placed_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b'prompt,response\n"two\nlines",fine\nok,caf\xe9\nlast,row\n')
    proc = run_cli("split", path, "-o", tmp_path / "o.parquet")
    assert proc.returncode == 2
    assert "t.csv, line 4: invalid UTF-8 at byte 7 of the line" in proc.stderr, proc.stderr
    skipped = run_cli("split", path, "-o", tmp_path / "o.parquet", "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert "wrote 4 pieces" in skipped.stdout and "invalid-utf8 1" in skipped.stdout


def test_a_meta_field_no_record_has_is_a_warning(tmp_path: Path) -> None:
    rec = {"id": "a", "dataset": "d", "info": {"lang": "en"},
           "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "m.jsonl", [rec])
    for quiet in ([], ["-q"]):
        proc = run_cli("split", path, "-o", tmp_path / "o.parquet", "--meta", "dataset,info.lang,info.lnag",
                       *quiet)
        assert proc.returncode == 0, proc.stderr
        assert "warning: --meta info.lnag: no record has this field" in proc.stderr
        assert "--meta dataset" not in proc.stderr and "--meta info.lang:" not in proc.stderr
        assert "the first record's fields: id, dataset, info, messages" in proc.stderr


def test_a_quote_never_closed_in_a_csv_is_an_error_on_its_line_not_rows_swallowed(tmp_path: Path) -> None:
    """One stray opening quote on line 4 made the rest of the file one cell: 10 prompt/response
    rows were read as 3 transcripts (the 7 after it one user turn), with no error or count."""
    path = tmp_path / "t.csv"
    rows = [f"q{i},a{i}" for i in range(10)]
    rows[2] = '"q2 has a stray quote,a2'
    path.write_text("prompt,response\n" + "\n".join(rows) + "\n")
    proc = run_cli("split", path, "-o", tmp_path / "o.parquet")
    assert proc.returncode == 2, proc.stdout
    assert "t.csv, line 4: unexpected end of data (a quote opened on line 4 or after is never closed)" \
        in proc.stderr, proc.stderr
    assert not (tmp_path / "o.parquet").exists()
