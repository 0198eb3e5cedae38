"""Reasoning tags count only where models put them (issue 13, item 1).

A ``<think>`` block at the start of the assistant text (closed or cut off), or a lone
``</think>`` on its own line closing reasoning begun in the prompt template. An answer that
*talks about* the tags keeps all its text as response, invents no thought, and is counted
as ambiguous when the tags stand outside code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import featdisco
from featdisco import ReadReport
from tests.conftest import write_jsonl

REGEX_ANSWER = (
    "To drop the reasoning, strip the tags:\n\n"
    "```python\nimport re\nclean = re.sub(r'<think>.*?</think>', '', text, flags=re.S)\n```\n\n"
    "That keeps only the answer."
)
INLINE_ANSWER = "Use `re.sub(r'<think>.*?</think>', '', s)` and you are done."
PROSE_ANSWER = "R1 wraps its reasoning in <think> tags and closes it with </think> before answering."
LONE_CLOSE_MID = "Write the closing tag </think> and then the answer follows."
FENCED_LONE_CLOSE = "Here is the end of a trace:\n\n```\nso x = 2\n</think>\n```\n\nThat is all."


def turn1(tmp_path: Path, content: str, report: ReadReport | None = None) -> dict[str, str]:
    rec = {"messages": [{"role": "user", "content": "How do I remove R1's reasoning?"},
                        {"role": "assistant", "content": content}]}
    rows = featdisco.split(write_jsonl(tmp_path / "t.jsonl", [rec]), report=report).to_pylist()
    return {r["kind"]: r["text"] for r in rows if r["turn"] == 1}


@pytest.mark.parametrize("answer", [REGEX_ANSWER, INLINE_ANSWER, FENCED_LONE_CLOSE])
def test_tags_inside_code_are_answer_text(tmp_path: Path, answer: str) -> None:
    report = ReadReport()
    assert turn1(tmp_path, answer, report) == {"response": answer}
    assert report.ambiguous_think == 0  # code that shows tags is not ambiguous


@pytest.mark.parametrize("answer", [PROSE_ANSWER, LONE_CLOSE_MID])
def test_tags_mid_prose_stay_response_and_are_counted(tmp_path: Path, answer: str) -> None:
    report = ReadReport()
    assert turn1(tmp_path, answer, report) == {"response": answer}
    assert report.ambiguous_think == 1


def test_a_real_block_before_an_answer_about_tags(tmp_path: Path) -> None:
    """The leading block is reasoning; the tags the answer shows in code stay in the answer."""
    report = ReadReport()
    got = turn1(tmp_path, f"<think>They want a regex.</think>\n\n{REGEX_ANSWER}", report)
    assert got == {"thought": "They want a regex.", "response": REGEX_ANSWER}
    assert report.ambiguous_think == 0


def test_close_tag_quoted_in_code_inside_reasoning_does_not_end_it(tmp_path: Path) -> None:
    content = "<think>The user's trace ends with `</think>`, so strip it.</think>Strip it."
    got = turn1(tmp_path, content)
    assert got == {"thought": "The user's trace ends with `</think>`, so strip it.", "response": "Strip it."}


def test_split_prints_the_ambiguous_count(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featdisco.cli import app

    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": PROSE_ANSWER}]}
    path = write_jsonl(tmp_path / "p.jsonl", [rec])
    result = CliRunner().invoke(app, ["split", str(path), "-o", str(tmp_path / "o.parquet")])
    assert result.exit_code == 0, result.output
    assert "ambiguous think tags (kept as response): 1" in result.output
