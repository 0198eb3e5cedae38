"""Raw chat-template text is split into turns (issue 13, item 2): no template token and no
prompt ends up inside a piece, and a generation cut off inside ``<think>`` is a thought
with no response. Fixtures follow each template as its model card documents it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import featdisco
from tests.conftest import write_jsonl

R1_PROMPT = ("<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?"
             "<｜Assistant｜><think>\n")
CHATML = ("<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\n<think>\nGreet them.\n</think>\n\nHello!<|im_end|>\n"
          "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nGoodbye.<|im_end|>\n")
LLAMA3 = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>")
GEMMA = ("<bos><start_of_turn>user\nTell a joke.<end_of_turn>\n<start_of_turn>model\n"
         "Why did the chicken cross the road?<end_of_turn>\n")


def split(tmp_path: Path, records: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    rows = featdisco.split(write_jsonl(tmp_path / "t.jsonl", records), **kw).to_pylist()
    for r in rows:  # no template token survives into a piece
        assert "<|" not in r["text"] and "<｜" not in r["text"] and "<start_of_turn>" not in r["text"]
    return rows


def kinds(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["kind"], r["text"]) for r in rows]


def test_deepseek_prompt_and_completion_columns(tmp_path: Path) -> None:
    rows = split(tmp_path, [{"prompt": R1_PROMPT,
                             "completion": "2 plus 2 is 4.\n</think>\n\nThe answer is 4.<｜end▁of▁sentence｜>"}])
    assert kinds(rows) == [("user", "What is 2+2?"), ("thought", "2 plus 2 is 4."),
                           ("response", "The answer is 4.")]
    assert rows[0]["system"] == "You are a helpful assistant."
    assert rows[0]["format"] == "template"


def test_a_generation_cut_off_inside_think_is_a_thought_without_response(tmp_path: Path) -> None:
    rows = split(tmp_path, [{"prompt": R1_PROMPT, "completion": "Let me add them carefully, 2 and"}])
    assert kinds(rows) == [("user", "What is 2+2?"), ("thought", "Let me add them carefully, 2 and")]


def test_chatml_llama3_and_gemma_text_columns(tmp_path: Path) -> None:
    rows = split(tmp_path, [{"id": "q", "text": CHATML}, {"id": "l", "text": LLAMA3},
                            {"id": "g", "text": GEMMA}])
    assert [(r["transcript_id"], r["turn"], r["kind"], r["text"]) for r in rows] == [
        ("q", 0, "user", "Hi"), ("q", 1, "thought", "Greet them."), ("q", 1, "response", "Hello!"),
        ("q", 2, "user", "Bye"), ("q", 3, "response", "Goodbye."),
        ("l", 0, "user", "Capital of France?"), ("l", 1, "response", "Paris."),
        ("g", 0, "user", "Tell a joke."), ("g", 1, "response", "Why did the chicken cross the road?")]
    assert rows[0]["system"] == "You are Qwen." and rows[5]["system"] == "Be brief."


def test_template_text_inside_other_formats_fields(tmp_path: Path) -> None:
    chat = {"messages": [
        {"role": "user", "content": "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"},
        {"role": "assistant", "content": "Blue.<|im_end|>"}]}
    mapped = {"q": R1_PROMPT, "a": "Four.\n</think>\n\n4<｜end▁of▁sentence｜>"}
    rows = split(tmp_path, [chat])
    assert kinds(rows) == [("user", "Name a colour."), ("response", "Blue.")]
    rows = split(tmp_path, [mapped], mapping="user=q,response=a")
    assert kinds(rows) == [("user", "What is 2+2?"), ("thought", "Four."), ("response", "4")]


def test_prose_about_template_tokens_is_left_alone(tmp_path: Path) -> None:
    question = "What does <|im_start|> mean in ChatML, and why does <|im_end|> close a turn?"
    rec = {"messages": [{"role": "user", "content": question},
                        {"role": "assistant", "content": "It opens a turn."}]}
    rows = featdisco.split(write_jsonl(tmp_path / "p.jsonl", [rec])).to_pylist()
    assert kinds(rows) == [("user", question), ("response", "It opens a turn.")]
