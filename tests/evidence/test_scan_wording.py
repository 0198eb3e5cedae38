"""A scan's question rewritten once per piece kind into a question about the piece's own text
(``--rewrite``), and the answers-only method: what the judge is asked, what the user is shown,
what the manifest keeps, and the fall-backs when the rewrite is unusable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featdisco.errors import FeatdiscoError
from featdisco.evidence.scan_wording import behaviour_words
from tests.analysis.planted import PlantedPiece, write_run
from tests.evidence.test_scan import planted_pieces, scan
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import pipeline_handler

QUESTION = "Does the model reason about its remaining token budget?"
REWRITTEN = "Does the reasoning reason about its remaining token budget?"


class Recorder:
    """Answers the rewrite with ``rewrite`` (raw reply text) and every scan as the pipeline
    fake does, keeping the question each scan request asked."""

    def __init__(self, rewrite: str) -> None:
        self.rewrite = rewrite
        self.rewrites = 0
        self.asked: list[str] = []

    def __call__(self, req: FakeRequest) -> Reply:
        schema = req.body.get("response_format", {}).get("json_schema", {})
        if schema.get("name") == "scan_question":
            self.rewrites += 1
            return Reply(content=self.rewrite)
        user = next(m["content"] for m in req.body["messages"] if m["role"] == "user")
        if m := re.search(r"\nQuestion: (.*)\n", user):
            self.asked.append(m.group(1))
        return pipeline_handler(req)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", planted_pieces(), [("thought", "Tracks its remaining token budget")])


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeOpenAIServer, Recorder]]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    rec = Recorder(json.dumps({"question": REWRITTEN}))
    with FakeOpenAIServer(rec) as srv:
        yield srv, rec


def test_the_rewritten_question_is_asked_shown_and_kept(run: Path, recorder: tuple[FakeOpenAIServer, Recorder]) -> None:
    srv, rec = recorder
    code, out = scan(srv, str(run), "--question", QUESTION, "--kind", "thought", "--name", "b", "--rewrite")
    assert code == 0, out
    assert rec.rewrites == 1  # once for the scan's one piece kind, not per piece
    assert len(rec.asked) == 400 + 70 and set(rec.asked) == {REWRITTEN}
    assert f"asked of each thought as: {REWRITTEN}" in out
    assert "prevalence 17.5% (70 of 400 pieces answered)" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["scans"]["b"]["question"] == QUESTION
    assert manifest["scans"]["b"]["asked"] == {"thought": REWRITTEN}
    # a rerun sends nothing: the rewrite is cached like every other call
    sent = srv.total
    assert scan(srv, str(run), "--question", QUESTION, "--kind", "thought", "--name", "b", "--rewrite")[0] == 0
    assert srv.total == sent


def test_without_rewrite_the_question_is_asked_as_written(run: Path,
                                                         recorder: tuple[FakeOpenAIServer, Recorder]) -> None:
    srv, rec = recorder
    code, out = scan(srv, str(run), "--question", QUESTION, "--kind", "thought", "--name", "b", "--no-rewrite")
    assert code == 0, out
    assert rec.rewrites == 0 and set(rec.asked) == {QUESTION} and "asked of each" not in out
    assert json.loads((run / "manifest.json").read_text())["scans"]["b"]["asked"] is None


@pytest.mark.parametrize("reply", [
    json.dumps({"question": "Does the reasoning say 'I will keep it short'?"}),  # example phrases, not the behaviour
    json.dumps({"question": "Token budget. Remaining."}),  # not a question
])
def test_a_rewrite_that_changes_the_meaning_falls_back_to_the_question(
        run: Path, recorder: tuple[FakeOpenAIServer, Recorder], reply: str) -> None:
    srv, rec = recorder
    rec.rewrite = reply
    code, out = scan(srv, str(run), "--question", QUESTION, "--kind", "thought", "--name", "b", "--rewrite")
    assert code == 0, out
    assert rec.rewrites == 1 and set(rec.asked) == {QUESTION}


def test_behaviour_words_ignore_who_is_referred_to() -> None:
    assert behaviour_words("Does the model decline, fully or in part, to do what the user asked?") == \
        {"decline", "fully", "part"}
    assert behaviour_words("Is this response a refusal of the user's request?") == {"refusal"}


def test_answer_method_asks_no_quotes(tmp_path: Path, recorder: tuple[FakeOpenAIServer, Recorder]) -> None:
    srv, rec = recorder
    run = write_run(tmp_path / "r", planted_pieces(), [("thought", "unused")])
    code, out = scan(srv, str(run), "--question", QUESTION, "--kind", "thought", "--name", "b",
                     "--method", "answer", "--no-rewrite")
    assert code == 0, out
    assert "prevalence 17.5% (70 of 400 pieces answered)" in out
    assert len(rec.asked) == 400  # the decisions alone: no quote call for the 70 yeses
    rows = pq.read_table(run / "scan_b.parquet").to_pylist()
    assert sum(r["answer"] for r in rows) == 70 and all(r["quote"] == "" and r["verified"] is None for r in rows)
    with pytest.raises(FeatdiscoError, match="--require-quote needs quotes"):
        scan(srv, str(run), "--question", QUESTION, "--method", "answer", "--require-quote")


def test_a_rewrite_per_piece_kind(tmp_path: Path, recorder: tuple[FakeOpenAIServer, Recorder]) -> None:
    srv, rec = recorder
    pieces = [PlantedPiece("t0", 0, "user", [], text="Mind the remaining token budget."),
              PlantedPiece("t0", 1, "response", [], text="Sure.")]
    run = write_run(tmp_path / "r", pieces, [("response", "unused")])
    code, out = scan(srv, str(run), "--question", QUESTION, "--name", "b", "--rewrite")
    assert code == 0, out
    assert rec.rewrites == 2
    assert json.loads((run / "manifest.json").read_text())["scans"]["b"]["asked"] == \
        {"response": REWRITTEN, "user": REWRITTEN}
