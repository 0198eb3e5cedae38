"""What a new user met trying featdisco end to end (the QA pass): each test is one finding
that was fixed, so it stays fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir
from tests.analysis.planted import PlantedPiece, write_run


def _chat_file(path: Path) -> Path:
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello there, how are you?"},
                                             {"role": "assistant", "content": "Fine, thanks for asking."}]}) + "\n")
    return path


@pytest.mark.parametrize("args", [
    ["run", "{chats}", "--run-dir", "{file}", "--llm", "openai", "--model", "gpt-4o-mini"],
    ["run", "{chats}", "--run-dir", "{file}", "--dry-run"],
])
def test_a_file_where_a_run_directory_goes_is_a_one_line_error(tmp_path: Path, args: list[str]) -> None:
    chats = _chat_file(tmp_path / "chats.jsonl")
    file = tmp_path / "notes.txt"
    file.write_text("my notes\n")
    proc = subprocess.run([sys.executable, "-m", "featdisco", *[a.format(chats=chats, file=file) for a in args]],
                          capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": "sk-test"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"featdisco: error: {file} is a file, not a run directory"
    assert file.read_text() == "my notes\n"
    with pytest.raises(FeatdiscoError, match="is a file, not a run directory"):
        RunDir(file)


def test_compare_by_transcript_counts_the_transcripts_left_out(tmp_path: Path) -> None:
    """10 transcripts of 2 pieces have no 'arm': --unit transcript says 10 transcripts, not 20 pieces."""
    pieces = []
    for t in range(30):
        meta: dict[str, object] = {"arm": "a" if t % 2 else "b"} if t >= 10 else {}
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [t % 2], metadata=meta))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", [2 + t % 2], metadata=meta))
    run = write_run(tmp_path / "run", pieces, [("user", "U0"), ("user", "U1"), ("response", "R0"),
                                               ("response", "R1")])
    by_piece = CliRunner().invoke(app, ["compare", str(run), "--by", "arm"])
    assert by_piece.exit_code == 0, by_piece.output
    assert "20 pieces have no 'arm' and are left out" in by_piece.output
    by_transcript = CliRunner().invoke(app, ["compare", str(run), "--by", "arm", "--unit", "transcript"])
    assert by_transcript.exit_code == 0, by_transcript.output
    assert "10 transcripts have no 'arm' and are left out" in by_transcript.output
