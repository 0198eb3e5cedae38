"""What a new user met trying featdisco end to end (the QA pass): each test is one finding
that was fixed, so it stays fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir


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
