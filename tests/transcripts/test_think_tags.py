"""Reasoning tags read as the reasoning servers read them (issues 13 and 22).

vLLM's ``deepseek_r1`` and SGLang's R1/Qwen3 reasoning parsers: a text that opens with
``<think>`` is reasoning up to the *first* ``</think>`` wherever it stands, and all reasoning
when none follows; a ``</think>`` with no opener closes a block the chat template opened.
The second rule is applied by what is known of the model, and every such decision is
counted. An answer that *talks about* the tags keeps all its text as response. Records are
shaped as the servers and APIs write them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

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
MENTION_ANSWER = "`<think>` tags are how R1 marks its reasoning; `</think>` ends it, and the answer follows."
LONE_CLOSE_MID = "Write the closing tag </think> and then the answer follows."
FENCED_LONE_CLOSE = "Here is the end of a trace:\n\n```\nso x = 2\n</think>\n```\n\nThat is all."

# A real R1 trace shape (the regression of issue 22): the reasoning opens a code fence it
# never closes, and </think> falls mid-line inside it. The first </think> ends the reasoning.
R1_UNCLOSED_FENCE = (
    "<think>\nThe user wants a function that doubles a number. A first sketch:\n\n"
    "```python\ndef double(x):\n    return x * 2   # that is all it needs</think>\n\n"
    "Here is the function:\n\n```python\ndef double(x):\n    return x * 2\n```\n\n"
    "It returns twice its argument."
)
R1_ANSWER = ("Here is the function:\n\n```python\ndef double(x):\n    return x * 2\n```\n\n"
             "It returns twice its argument.")


def chat_completion(content: str, model: str, **message: Any) -> dict[str, Any]:
    """A request/response log of one Chat Completions call (what a gateway writes)."""
    return {"id": "log-1",
            "request": {"model": model, "messages": [{"role": "user", "content": "Write double(x) in Python."}]},
            "response": {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, **message}}]}}


def turn1(tmp_path: Path, content: str, report: ReadReport | None = None, *, model: str | None = None,
          **message: Any) -> dict[str, str]:
    if model is not None:
        rec = chat_completion(content, model, **message)
    else:
        rec = {"messages": [{"role": "user", "content": "How do I remove R1's reasoning?"},
                            {"role": "assistant", "content": content, **message}]}
    rows = featdisco.split(write_jsonl(tmp_path / "t.jsonl", [rec]), report=report).to_pylist()
    return {r["kind"]: r["text"] for r in rows if r["turn"] == 1}


def test_first_close_ends_reasoning_inside_an_unclosed_fence(tmp_path: Path) -> None:
    """The regression: the response was swallowed into the thought."""
    for model in ("deepseek-ai/DeepSeek-R1", "my-finetune", None):
        got = turn1(tmp_path, R1_UNCLOSED_FENCE, model=model)
        assert got["response"] == R1_ANSWER, model
        assert got["thought"].startswith("The user wants a function")
        assert got["thought"].endswith("# that is all it needs")


def test_an_open_block_cut_off_by_the_token_limit_is_all_reasoning(tmp_path: Path) -> None:
    rec = chat_completion("<think>\nLet me count: 1, 2, 3, and then", "deepseek-r1")
    rec["response"]["choices"][0]["finish_reason"] = "length"
    rows = featdisco.split(write_jsonl(tmp_path / "c.jsonl", [rec])).to_pylist()
    assert [(r["kind"], r["text"]) for r in rows if r["turn"] == 1] == [
        ("thought", "Let me count: 1, 2, 3, and then")]


@pytest.mark.parametrize("answer", [REGEX_ANSWER, INLINE_ANSWER, FENCED_LONE_CLOSE, MENTION_ANSWER])
def test_tags_inside_code_are_answer_text(tmp_path: Path, answer: str) -> None:
    for model in (None, "gpt-4o-2024-08-06"):
        report = ReadReport()
        assert turn1(tmp_path, answer, report, model=model) == {"response": answer}
        assert report.ambiguous_think == 0  # code that shows tags is not ambiguous
        assert not report.think.stray_close and not report.think.template_closed


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


def test_the_first_close_wins_even_when_the_reasoning_quotes_it(tmp_path: Path) -> None:
    """As vLLM and SGLang split it: the reasoning ends at the first </think>, code or not;
    the tag left in the answer is counted as ambiguous, never hidden."""
    report = ReadReport()
    content = "<think>The user's trace ends with `</think>`, so strip it.</think>Strip it."
    got = turn1(tmp_path, content, report)
    assert got == {"thought": "The user's trace ends with `", "response": "`, so strip it.</think>Strip it."}
    assert report.ambiguous_think == 1


def test_reasoning_content_and_think_tags_give_each_reasoning_once(tmp_path: Path) -> None:
    """DeepSeek / vLLM with a reasoning parser and a template that echoes the block: the
    same reasoning in ``reasoning_content`` and in the content's tags."""
    report = ReadReport()
    got = turn1(tmp_path, "<think>\nDouble means times two.\n</think>\n\ndef double(x): return 2 * x", report,
                model="deepseek-reasoner", reasoning_content="Double means times two.")
    assert got == {"thought": "Double means times two.", "response": "def double(x): return 2 * x"}
    assert report.think.duplicates == 1
    # OpenRouter's ``reasoning`` field beside a different block: both kept, each once
    got = turn1(tmp_path, "<think>Check: 2 * 3 = 6.</think>def double(x): return 2 * x",
                model="deepseek/deepseek-r1", reasoning="Double means times two.")
    assert got == {"thought": "Double means times two.\n\nCheck: 2 * 3 = 6.",
                   "response": "def double(x): return 2 * x"}


def test_an_empty_reasoning_field_does_not_hide_the_next_one(tmp_path: Path) -> None:
    """A gateway that writes ``reasoning_content: ""`` beside vLLM's newer ``reasoning``
    field: the reasoning is the thought, not silently lost."""
    got = turn1(tmp_path, "def double(x): return 2 * x", model="Qwen/Qwen3-8B",
                reasoning_content="", reasoning="Double means times two.")
    assert got == {"thought": "Double means times two.", "response": "def double(x): return 2 * x"}
    got = turn1(tmp_path, "def double(x): return 2 * x", reasoning_content="  ", thinking="Times two.")
    assert got == {"thought": "Times two.", "response": "def double(x): return 2 * x"}

def test_a_template_opened_block_is_closed_by_the_first_close(tmp_path: Path) -> None:
    """R1's chat template pre-fills <think>: the generation holds only </think>. For an R1
    model the servers' rule holds wherever the tag stands, and the split is counted."""
    report = ReadReport()
    got = turn1(tmp_path, "Two times x.\n\nSo return x * 2.</think>\n\ndef double(x): return x * 2", report,
                model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert got == {"thought": "Two times x.\n\nSo return x * 2.", "response": "def double(x): return x * 2"}
    assert report.think.template_closed == 1
    assert any("closed reasoning the template opened" in line and line.endswith(": 1") for line in report.notes())


def test_a_non_reasoning_models_stray_close_stays_response_and_is_counted(tmp_path: Path) -> None:
    report = ReadReport()
    text = "Sure.\n\n</think>\n\nDone."
    assert turn1(tmp_path, text, report, model="gpt-4o-2024-08-06") == {"response": text}
    assert dict(report.think.stray_close) == {"gpt-4o-2024-08-06": 1}
    assert any("stray </think>" in line and "gpt-4o-2024-08-06 1" in line for line in report.notes())


def test_an_unknown_models_close_on_its_own_line_is_a_template_close(tmp_path: Path) -> None:
    """Nothing known of the model: only a lone </think> standing on its own line is taken
    as a template's block (and counted); mid-line it is a mention."""
    report = ReadReport()
    got = turn1(tmp_path, "Sure.\n\n</think>\n\nDone.", report, model="acme-chat-7b")
    assert got == {"thought": "Sure.", "response": "Done."}
    assert report.think.template_closed == 1


def test_a_column_mapped_as_thought_and_response_is_split_once(tmp_path: Path) -> None:
    path = tmp_path / "gen.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "output"])
        w.writerow(["Double 4?", "<think>4 * 2 = 8.</think>\n\n8"])
        w.writerow(["Triple 2?", "2 * 3 = 6.\n</think>\n\n6"])  # a template-opened block
    rows = featdisco.split(path, mapping="user=prompt,thought=output,response=output").to_pylist()
    assert [(r["kind"], r["text"]) for r in rows if r["kind"] != "user"] == [
        ("thought", "4 * 2 = 8."), ("response", "8"), ("thought", "2 * 3 = 6."), ("response", "6")]


def test_split_prints_the_ambiguous_and_stray_counts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featdisco.cli import app

    recs = [{"model": "gpt-4o", "messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": text}]}
            for text in (PROSE_ANSWER, "Sure.\n\n</think>\n\nDone.")]
    path = write_jsonl(tmp_path / "p.jsonl", recs)
    result = CliRunner().invoke(app, ["split", str(path), "-o", str(tmp_path / "o.parquet")])
    assert result.exit_code == 0, result.output
    assert "ambiguous think tags (kept as response): 1" in result.output
    assert "kept as response: 1 (gpt-4o 1)" in result.output


def test_an_unclosed_block_ends_at_a_tool_call(tmp_path: Path) -> None:
    """SGLang's Qwen3 rule: a tool call opened before </think> ends the reasoning."""
    text = '<think>\nI need the weather.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    got = turn1(tmp_path, text, model="Qwen/Qwen3-8B")
    assert got == {"thought": "I need the weather.", "response": text[text.index("<tool_call>"):]}


@pytest.mark.parametrize(("model", "known"), [
    ("deepseek-ai/DeepSeek-R1", True), ("deepseek-r1-distill-llama-70b", True), ("Qwen/QwQ-32B", True),
    ("Qwen/Qwen3-235B-A22B", True), ("deepseek-reasoner", True), ("open-thoughts/OpenThinker-7B", True),
    ("gpt-4o-2024-08-06", False), ("o3-mini", False), ("claude-3-7-sonnet-thinking", False),
    ("gemini-2.0-flash-thinking-exp", False), ("meta-llama/Llama-3.1-8B-Instruct", False),
    ("Qwen/Qwen2.5-7B-Instruct", False), ("mistralai/Mistral-7B-Instruct-v0.3", False),
    ("acme-chat-7b", None), (None, None)])
def test_what_is_known_of_a_model(model: str | None, known: bool | None) -> None:
    from featdisco.transcripts.formats.think import reasons_in_tags

    assert reasons_in_tags(model) is known
