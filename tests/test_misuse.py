"""Every command, misused in each ordinary way, answers with one line on stderr naming what
is wrong, exit status 2, no traceback, and nothing created (issue 22).

The classes of misuse: a file where a directory goes, a directory that does not exist, a
directory that is not a run, an input that cannot be read, a bad number, an unknown
column. Before the typed path checks of ``cli/common.py`` a file where a run directory goes
was a ``FileExistsError`` traceback, a mistyped run directory was created empty, and ``edit
FILE list`` exited 0. Commands run in-process through ``featdisco.cli.main`` (what the
``featdisco`` script calls), so the exit status and stderr are the user's.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from featdisco.cli import app, main
from tests.analysis.planted import PlantedPiece, write_run

FILE, MISSING, NOT_RUN, UNREADABLE, NUMBER, COLUMN = (
    "file for directory", "missing directory", "not a run", "unreadable file", "bad number", "unknown column")

# (command, class, arguments, what the one line must name). {run} is a run, {file} a plain
# file, {missing} a path that does not exist, {notrun} a folder of other files, {input} a
# transcript file, {new} a run directory not yet made, {broken} a transcript input that cannot
# be read (a broken link; folders of transcripts are inputs too), {unreadable} a folder where
# a labels file goes, {labels} a labels file. Root reads files of any mode, so the
# permission case is its own test, skipped for root.
CASES: list[tuple[str, str, str, str]] = [
    ("split", FILE, "split {input} -o {file}/pieces.parquet", "{file}"),
    ("split", MISSING, "split {missing} -o {new}/pieces.parquet", "{missing}"),
    ("split", UNREADABLE, "split {broken} -o {new}/pieces.parquet", "{broken} is a broken link"),
    ("split", NUMBER, "split {input} -o {new}/pieces.parquet --max-chars 0", "--max-chars"),
    ("run", FILE, "run {input} --run-dir {file} --dry-run", "{file}"),
    ("run", FILE, "run {input} -d {file}/sub --dry-run", "{file}"),
    ("run", MISSING, "run --run-dir {missing}", "{missing}"),
    ("run", NOT_RUN, "run --run-dir {notrun}", "{notrun}"),
    ("run", UNREADABLE, "run {broken} --run-dir {new} --dry-run", "{broken}"),
    ("run", NUMBER, "run {input} --run-dir {new} --min-features many", "--min-features"),
    ("run", NUMBER, "run {input} --run-dir {new} --rpm -5", "--rpm"),
    ("status", FILE, "status {file}", "{file}"),
    ("status", MISSING, "status {missing}", "{missing}"),
    ("status", NOT_RUN, "status {notrun}", "{notrun}"),
    ("transform", FILE, "transform {run} {input} -o {file}", "{file}"),
    ("transform", FILE, "transform {file} {input} -o {new}", "{file}"),
    ("transform", MISSING, "transform {missing} {input} -o {new}", "{missing}"),
    ("transform", NOT_RUN, "transform {notrun} {input} -o {new}", "{notrun}"),
    ("transform", UNREADABLE, "transform {run} {broken} -o {new}", "{broken}"),
    ("transform", NUMBER, "transform {run} {input} -o {new} --concurrency 0", "--concurrency"),
    ("report", FILE, "report {file}", "{file}"),
    ("report", FILE, "report {run} -o {file}", "{file}"),
    ("report", MISSING, "report {missing}", "{missing}"),
    ("report", NOT_RUN, "report {notrun}", "{notrun}"),
    ("report", NUMBER, "report {run} --map-points none", "--map-points"),
    ("serve", FILE, "serve {file}", "{file}"),
    ("serve", MISSING, "serve {missing}", "{missing}"),
    ("serve", NOT_RUN, "serve {notrun}", "{notrun}"),
    ("serve", NUMBER, "serve {run} --port 99999", "--port"),
    *[(cmd, cls, f"{cmd} {arg}{extra}", named)
      for cmd, extra in (("frequency", ""), ("probe", ""), ("compare", " --by model"), ("cooccur", ""),
                         ("score-labels", ""), ("hierarchy", ""), ("stability", ""), ("find", " cooking"))
      for cls, arg, named in ((FILE, "{file}", "{file}"), (MISSING, "{missing}", "{missing}"),
                              (NOT_RUN, "{notrun}", "{notrun}"))],
    *[(cmd.split()[0], NUMBER, f"{cmd} --top ten", "--top")
      for cmd in ("frequency {run}", "probe {run}", "compare {run} --by model", "cooccur {run}",
                  "score-labels {run}", "hierarchy {run}", "stability {run}", "find {run} cooking")],
    ("probe", NUMBER, "probe {run} --test-size 2", "--test-size"),
    ("compare", NUMBER, "compare {run} --by model --alpha 5", "--alpha"),
    ("stability", NUMBER, "stability {run} --fraction 2", "--fraction"),
    ("stability", NUMBER, "stability {run} --match 3", "--match"),
    ("hierarchy", NUMBER, "hierarchy {run} --levels 9", "--levels"),
    ("compare", COLUMN, "compare {run} --by nope", "'nope'"),
    ("validate", FILE, "validate {file} {labels}", "{file}"),
    ("validate", MISSING, "validate {missing} {labels}", "{missing}"),
    ("validate", MISSING, "validate {run} {missing}", "{missing}"),
    ("validate", NOT_RUN, "validate {notrun} {labels}", "{notrun}"),
    ("validate", UNREADABLE, "validate {run} {unreadable}", "{unreadable}"),
    ("validate", COLUMN, "validate {run} {badheader}", "'label'"),
    ("scan", FILE, "scan {file} --question q", "{file}"),
    ("scan", FILE, "scan {input} --run-dir {file} --question q", "{file}"),
    ("scan", MISSING, "scan {missing} --question q", "{missing}"),
    ("scan", NOT_RUN, "scan {notrun} --question q", "{notrun}"),
    ("scan", UNREADABLE, "scan {broken} --run-dir {new} --question q", "{broken}"),
    ("scan", NUMBER, "scan {run} --question q --sample 0", "--sample"),
    ("scan", COLUMN, "scan {run} --question q --by nope --dry-run --llm openai --model gpt-4o-mini", "'nope'"),
    ("ask", FILE, "ask {file} q", "{file}"),
    ("ask", MISSING, "ask {missing} q", "{missing}"),
    ("ask", NOT_RUN, "ask {notrun} q", "{notrun}"),
    ("ask", NUMBER, "ask {run} q --max-sample 0", "--max-sample"),
    ("demo", FILE, "demo findings {file}", "{file}"),
    ("demo", MISSING, "demo findings {missing}", "{missing}"),
    ("demo", NOT_RUN, "demo findings {notrun}", "{notrun}"),
    ("demo", MISSING, "demo sample {missing} -o {new}", "{missing}"),
    ("demo", FILE, "demo sample {file} -o {new}", "{file}"),
    ("demo", FILE, "demo sample {notrun} -o {file}", "{file}"),
    ("demo", NUMBER, "demo sample {notrun} -o {new} --per-model 0", "--per-model"),
    ("edit", FILE, "edit {file} list", "{file}"),
    ("edit", MISSING, "edit {missing} list", "{missing}"),
    ("edit", NOT_RUN, "edit {notrun} list", "{notrun}"),
    ("edit", NUMBER, "edit {run} hide first", "'cluster'"),
]


@pytest.fixture
def place(tmp_path: Path) -> dict[str, Path]:
    """Fresh for each case, so that what one case wrongly creates cannot hide another's."""
    root = tmp_path
    pieces = [PlantedPiece(f"t{i}", 1, "response", [i % 2], model="ab"[i % 2]) for i in range(20)]
    run = write_run(root / "run", pieces, [("response", "Cooking"), ("response", "Markdown")])
    (root / "notes.txt").write_text("not a run\n")
    (root / "other").mkdir()
    (root / "other" / "readme.txt").write_text("a folder, but not a run\n")
    (root / "chats.jsonl").write_text(json.dumps({"id": "a", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    (root / "a-folder.jsonl").mkdir()
    (root / "labels.csv").write_text("piece_id,target,label\nt0:1:response,cluster:response:0,true\n")
    (root / "bad-header.csv").write_text("piece_id,target,verdict\nt0:1:response,cluster:response:0,true\n")
    os.symlink(root / "gone.jsonl", root / "broken.jsonl")
    return {"root": root, "run": run, "file": root / "notes.txt", "missing": root / "runs" / "typo",
            "notrun": root / "other", "input": root / "chats.jsonl", "new": root / "new-run",
            "unreadable": root / "a-folder.jsonl", "labels": root / "labels.csv",
            "badheader": root / "bad-header.csv", "broken": root / "broken.jsonl"}


def tree(root: Path) -> set[str]:
    """Every path under ``root``, less a run's ``.lock`` (every command on a run takes the lock
    before it reads its arguments' columns; the file is the run's, not the misuse's)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".lock"}


def featdisco(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``featdisco ARGV`` as the console script runs it: (exit status, stderr)."""
    old = sys.argv
    sys.argv = ["featdisco", *argv]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_llm_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FEATDISCO_LLM", "FEATDISCO_BASE_URL", "FEATDISCO_PRICES"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.mark.parametrize(("command", "misuse", "args", "named"), CASES,
                         ids=[f"{c}-{m.replace(' ', '_')}-{i}" for i, (c, m, _, _) in enumerate(CASES)])
def test_misuse_is_one_line_exit_2_and_creates_nothing(place: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                       command: str, misuse: str, args: str, named: str) -> None:
    paths = {k: str(v) for k, v in place.items()}
    before = tree(place["root"])
    code, err = featdisco(args.format(**paths).split(), capsys)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("featdisco: error: ")
    assert named.format(**paths) in lines[0], lines[0]
    assert tree(place["root"]) == before, "the command created or removed files"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_a_file_without_read_permission(place: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    code, err = featdisco(["split", str(locked), "-o", str(tmp_path / "p.parquet")], capsys)
    assert code == 2 and f"{locked} cannot be read" in err


def test_every_command_is_in_the_matrix() -> None:
    """A new command gets its misuse cases here, or this fails."""
    group = typer.main.get_command(app)
    names = set(group.commands) - {"formats", "models"}  # type: ignore[attr-defined]
    covered = {c for c, *_ in CASES}
    assert names <= covered, names - covered
    for cmd in names:  # each takes a run directory or files, so each meets the path misuses
        assert {m for c, m, *_ in CASES if c == cmd} & {FILE, MISSING, UNREADABLE}, cmd


def test_a_folder_given_as_a_prompt_file_is_called_a_folder(tmp_path: Path) -> None:
    """`--prompt featurize=prompts/` (a folder) said the prompt file "does not exist"."""
    from featdisco.errors import FeatdiscoError
    from featdisco.prompts import load_prompt

    with pytest.raises(FeatdiscoError, match=f"prompt file {tmp_path} is a folder; give the prompt's file"):
        load_prompt("featurize", tmp_path)
    with pytest.raises(FeatdiscoError, match="does not exist"):
        load_prompt("featurize", tmp_path / "nope.txt")


def test_a_refused_run_leaves_no_folders_above_its_run_directory(tmp_path: Path) -> None:
    """`run bad.jsonl --run-dir new/a/b` refused on a malformed record removed nothing it had
    made: the run directory was never created, so cleaning up stopped there and left `new/a`
    (and `runs/` in the working folder by default)."""
    import subprocess

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "broken"\n')
    work = tmp_path / "work"
    work.mkdir()
    for args in (["--run-dir", str(work / "new" / "a" / "b")], []):
        proc = subprocess.run([sys.executable, "-m", "featdisco", "run", str(bad), *args, "--llm", "openai",
                               "--model", "gpt-4o-mini"], capture_output=True, text=True, cwd=work,
                              env={**os.environ, "OPENAI_API_KEY": "sk-test"})
        assert proc.returncode == 2 and "bad.jsonl, line 1: malformed JSON" in proc.stderr, proc.stderr
        assert list(work.iterdir()) == []
