"""Every record format in SPEC.md becomes the right user / thought / response pieces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import featdisco
from featdisco import ReadReport, SplitStats
from tests.conftest import write_json, write_jsonl


def pieces(path: Path, **kw: Any) -> list[dict[str, Any]]:
    return featdisco.split(path, **kw).to_pylist()


def kinds(rows: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(r["turn"], r["kind"], r["text"]) for r in rows]


def detected(path: Path) -> str:
    report = ReadReport()
    featdisco.split(path, report=report)
    return report.files[0].format


def test_openai_messages_with_reasoning_fields_parts_and_tools(tmp_path: Path) -> None:
    rec = {
        "id": "conv-1",
        "model": "deepseek-r1",
        "dataset": "rollouts",
        "checkpoint": "step-100",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is in"},
                                         {"type": "image_url", "image_url": {"url": "data:x"}},
                                         {"type": "text", "text": "this picture?"}]},
            {"role": "assistant", "reasoning_content": "The user sent an image.",
             "content": "A cat.",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "lookup", "arguments": "{\"q\": \"cat\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "cats are mammals"},
            {"role": "assistant", "reasoning": "Tool says mammal.", "content": None},
            {"role": "assistant", "content": "It is a mammal."},
        ],
    }
    path = write_jsonl(tmp_path / "chat.jsonl", [rec])
    rows = pieces(path)
    assert detected(path) == "openai"
    assert kinds(rows) == [
        (0, "user", "What is in\n\n[image_url]\n\nthis picture?"),
        (1, "thought", "The user sent an image."),
        (1, "response", 'A cat.\n\n[tool call] lookup({"q": "cat"})'),
        (3, "thought", "Tool says mammal."),
        (4, "response", "It is a mammal."),
    ]
    assert {r["transcript_id"] for r in rows} == {"conv-1"}
    assert rows[0]["piece_id"] == "conv-1:0:user"
    assert rows[0]["model"] == "deepseek-r1"
    assert rows[0]["system"] == "You are terse."
    meta = json.loads(rows[0]["metadata"])
    assert meta["dataset"] == "rollouts" and meta["checkpoint"] == "step-100"


def test_openrouter_reasoning_details_and_legacy_function_call(tmp_path: Path) -> None:
    rec = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "",
         "reasoning_details": [{"type": "reasoning.text", "text": "Greet back."},
                               {"type": "reasoning.encrypted", "data": "xx"}],
         "function_call": {"name": "wave", "arguments": "{}"}},
    ]}
    rows = pieces(write_jsonl(tmp_path / "or.jsonl", [rec]))
    assert kinds(rows) == [(0, "user", "hi"), (1, "thought", "Greet back."),
                           (1, "response", "[tool call] wave({})")]
    assert rows[1]["redacted"] == 1


@pytest.mark.parametrize(
    ("content", "thought", "response"),
    [
        ("<think>Plan it.</think>The answer is 4.", "Plan it.", "The answer is 4."),
        ("<think>First.</think>\n<think>Second.</think>End.", "First.\n\nSecond.", "End."),
        ("Reasoning begun in the template.\n</think>\n\nFinal.", "Reasoning begun in the template.",
         "Final."),
        ("  <think>Leading space.</think>Done.", "Leading space.", "Done."),
        ("<think>I was cut off by the token lim", "I was cut off by the token lim", None),
        ("<thinking>Claude style.</thinking>Ok.", "Claude style.", "Ok."),
        ("No tags at all, just <b>html</b>.", None, "No tags at all, just <b>html</b>."),
    ],
)
def test_think_tags(tmp_path: Path, content: str, thought: str | None, response: str | None) -> None:
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]}
    rows = pieces(write_jsonl(tmp_path / "t.jsonl", [rec]))
    got = {r["kind"]: r["text"] for r in rows if r["turn"] == 1}
    assert got.get("thought") == thought
    assert got.get("response") == response


def test_think_tags_apply_to_every_format(tmp_path: Path) -> None:
    rec = {"conversations": [{"from": "human", "value": "2+2?"},
                             {"from": "gpt", "value": "<think>Add them.</think>4"}]}
    rows = pieces(write_jsonl(tmp_path / "sg.jsonl", [rec]))
    assert kinds(rows) == [(0, "user", "2+2?"), (1, "thought", "Add them."), (1, "response", "4")]


def test_anthropic_blocks(tmp_path: Path) -> None:
    rec = {
        "model": "claude-sonnet-4",
        "system": [{"type": "text", "text": "Be careful."}],
        "messages": [
            {"role": "user", "content": "Check the weather in Paris."},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Need the tool.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "tu1", "content": [{"type": "text", "text": "18C"}]},
            ]},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "opaque"},
                                              {"type": "text", "text": "It is 18C."}]},
        ],
    }
    path = write_jsonl(tmp_path / "claude.jsonl", [rec])
    stats = SplitStats()
    rows = pieces(path, stats=stats)
    assert detected(path) == "anthropic"
    assert kinds(rows) == [
        (0, "user", "Check the weather in Paris."),
        (1, "thought", "Need the tool."),
        (1, "response", 'Let me look.\n\n[tool call] weather({"city":"Paris"})'),
        (3, "response", "It is 18C."),
    ]
    # The tool result is not a user piece; redacted thinking is counted, never invented.
    assert stats.redacted_blocks == 2 and stats.redacted_only_turns == 1
    assert rows[1]["redacted"] == 1
    assert rows[0]["system"] == "Be careful."


def test_gemini_thought_parts_camel_and_snake(tmp_path: Path) -> None:
    camel = {"systemInstruction": {"parts": [{"text": "Be terse."}]}, "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"text": "Call the tool.", "thought": True},
                                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                     "thoughtSignature": "Ci"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 18}}}]},
        {"role": "model", "parts": [{"text": "18 degrees."}]},
    ]}
    snake = {"contents": [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Say hello.", "thought": True, "thought_signature": "x"},
                                    {"text": "Hello!"}]},
    ], "model": "gemini-2.5-pro"}
    path = write_jsonl(tmp_path / "gem.jsonl", [camel, snake])
    rows = pieces(path)
    assert detected(path) == "gemini"
    first = [r for r in rows if r["system"] == "Be terse."]
    assert kinds(first) == [(0, "user", "Weather in Paris?"), (1, "thought", "Call the tool."),
                            (1, "response", '[tool call] get_weather({"city":"Paris"})'),
                            (3, "response", "18 degrees.")]
    second = [r for r in rows if r["model"] == "gemini-2.5-pro"]
    assert kinds(second) == [(0, "user", "Hi"), (1, "thought", "Say hello."), (1, "response", "Hello!")]


def test_gemini_response_model_version_that_is_not_a_string_names_no_model(tmp_path: Path) -> None:
    # A saved response whose modelVersion is a number once crashed the whole read with a
    # traceback (the think-tag check called .rsplit on it); now the record simply has no model.
    rec = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
           "response": {"candidates": [{"content": {"parts": [{"text": "Hello!"}]}}], "modelVersion": 12}}
    path = write_jsonl(tmp_path / "gem.jsonl", [rec, {**rec, "response": {**rec["response"],
                                                                        "modelVersion": "gemini-2.5-flash"}}])
    rows = pieces(path)
    assert [(r["model"], r["kind"], r["text"]) for r in rows] == [
        (None, "user", "Hi"), (None, "response", "Hello!"),
        ("gemini-2.5-flash", "user", "Hi"), ("gemini-2.5-flash", "response", "Hello!")]


def test_sharegpt_roles(tmp_path: Path) -> None:
    rec = {"id": "sg1", "conversations": [
        {"from": "system", "value": "sys"},
        {"from": "human", "value": "Call a tool"},
        {"from": "function_call", "value": "{\"name\": \"f\"}"},
        {"from": "observation", "value": "result"},
        {"from": "gpt", "value": "Done."},
    ]}
    path = write_jsonl(tmp_path / "sg.jsonl", [rec])
    rows = pieces(path)
    assert detected(path) == "sharegpt"
    assert kinds(rows) == [(0, "user", "Call a tool"),
                           (1, "response", '[tool call] function({"name": "f"})'),
                           (3, "response", "Done.")]
    assert rows[0]["system"] == "sys"


def test_hh_rlhf_chosen_and_rejected(tmp_path: Path) -> None:
    rec = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Bye!",
           "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away.\n\nHuman: Bye\n\nAssistant:"}
    path = write_jsonl(tmp_path / "hh.jsonl", [rec])
    stats = SplitStats()
    rows = pieces(path, stats=stats)
    chosen = [r for r in rows if r["transcript_id"].endswith(":chosen")]
    rejected = [r for r in rows if r["transcript_id"].endswith(":rejected")]
    assert kinds(chosen) == [(0, "user", "Hi there"), (1, "response", "Hello!"), (2, "user", "Bye"),
                             (3, "response", "Bye!")]
    assert [r["kind"] for r in rejected] == ["user", "response", "user"]  # empty last turn dropped
    assert stats.empty_dropped["response"] == 1
    assert json.loads(rejected[0]["metadata"])["variant"] == "rejected"


def test_alpaca_eval_and_arena_hard_v2(tmp_path: Path) -> None:
    alpaca = write_json(tmp_path / "m.model_outputs.json", [
        {"dataset": "helpful_base", "instruction": "Name a colour.", "output": "Blue.",
         "generator": "gpt-x"}])
    rows = pieces(alpaca)
    assert kinds(rows) == [(0, "user", "Name a colour."), (1, "response", "Blue.")]
    assert rows[0]["model"] == "gpt-x"

    arena = write_jsonl(tmp_path / "arena" / "model_answer" / "r1.jsonl", [
        {"uid": "q1", "ans_id": "a1", "model": "deepseek-r1", "messages": [
            {"role": "user", "content": "Write a haiku."},
            {"role": "assistant", "content": {"thought": "5-7-5.", "answer": "Leaves fall..."}}]},
    ])
    rows = pieces(arena)
    assert kinds(rows) == [(0, "user", "Write a haiku."), (1, "thought", "5-7-5."),
                           (1, "response", "Leaves fall...")]
    assert rows[0]["transcript_id"] == "a1"


def test_mt_bench_style_answers_join_questions(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "bench" / "question.jsonl", [
        {"question_id": 1, "category": "math", "turns": ["Q1 turn 1", "Q1 turn 2"]}])
    answers = write_jsonl(tmp_path / "bench" / "model_answer" / "m.jsonl", [
        {"question_id": 1, "answer_id": "ans1", "model_id": "m",
         "choices": [{"index": 0, "turns": ["A1", "<think>hmm</think>A2"]}]}])
    rows = pieces(answers)
    assert kinds(rows) == [(0, "user", "Q1 turn 1"), (1, "response", "A1"), (2, "user", "Q1 turn 2"),
                           (3, "thought", "hmm"), (3, "response", "A2")]
    meta = json.loads(rows[0]["metadata"])
    assert meta["question_id"] == "1" and meta["category"] == "math"

    # Arena-Hard v0.1: answer turns are {"content": ...}, questions have turns of {"content": ...}
    write_jsonl(tmp_path / "ah" / "question.jsonl", [
        {"question_id": "abc", "category": "hard", "turns": [{"content": "Prove it."}]}])
    old = write_jsonl(tmp_path / "ah" / "model_answer" / "m.jsonl", [
        {"question_id": "abc", "answer_id": "x", "model_id": "m",
         "choices": [{"index": 0, "turns": [{"content": "Proof.", "token_len": 2}]}]}])
    assert kinds(pieces(old)) == [(0, "user", "Prove it."), (1, "response", "Proof.")]


def test_mt_bench_without_question_file_is_a_clear_error(tmp_path: Path) -> None:
    answers = write_jsonl(tmp_path / "lonely.jsonl", [
        {"question_id": 1, "answer_id": "a", "model_id": "m", "choices": [{"turns": ["x"]}]}])
    with pytest.raises(featdisco.InputError, match=r"lonely\.jsonl, line 1: .*--questions"):
        pieces(answers)


def test_inspect_json_log_and_eval_zip(tmp_path: Path) -> None:
    import zipfile

    eval_spec = {"eval_id": "E1", "task": "math", "model": "anthropic/claude-sonnet-4"}
    sample = {
        "id": 42, "epoch": 1, "input": "What is 17*23?", "target": "391",
        "messages": [
            {"role": "system", "content": "Solve."},
            {"role": "user", "content": "What is 17*23?", "source": "input"},
            {"role": "assistant", "content": [
                {"type": "reasoning", "reasoning": "17*23=391", "signature": "s", "redacted": False},
                {"type": "text", "text": "Let me check."}],
             "tool_calls": [{"id": "t1", "function": "python", "arguments": {"code": "print(17*23)"},
                             "type": "function"}]},
            {"role": "tool", "tool_call_id": "t1", "function": "python", "content": "391\n"},
            {"role": "assistant", "content": "attachment://abc123"},
        ],
        "attachments": {"abc123": "The answer is 391."},
        "scores": {"match": {"value": "C"}},
    }
    log = write_json(tmp_path / "log.json", {"version": 2, "status": "success", "eval": eval_spec,
                                             "samples": [sample]})
    expected = [(0, "user", "What is 17*23?"), (1, "thought", "17*23=391"),
                (1, "response", 'Let me check.\n\n[tool call] python({"code":"print(17*23)"})'),
                (3, "response", "The answer is 391.")]
    rows = pieces(log)
    assert detected(log) == "inspect"
    assert kinds(rows) == expected
    assert rows[0]["transcript_id"] == "E1/42/e1"
    assert rows[0]["model"] == "anthropic/claude-sonnet-4"
    assert json.loads(rows[0]["metadata"])["score_match"] == "C"

    eval_zip = tmp_path / "run.eval"
    with zipfile.ZipFile(eval_zip, "w") as zf:
        zf.writestr("header.json", json.dumps({"version": 2, "status": "success", "eval": eval_spec}))
        zf.writestr("samples/42_epoch_1.json", json.dumps(sample))
        zf.writestr("summaries.json", "[]")
    assert kinds(pieces(eval_zip)) == expected


def test_tabular_mapping_and_auto_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"prompt_text": ["Hi?"], "out": ["Hello."], "why": ["Be nice."],
                             "gen": ["m1"], "split": ["test"]}), path)
    rows = pieces(path, mapping="user=prompt_text,response=out,thought=why,model=gen")
    assert kinds(rows) == [(0, "user", "Hi?"), (1, "thought", "Be nice."), (1, "response", "Hello.")]
    assert rows[0]["model"] == "m1"
    assert json.loads(rows[0]["metadata"])["split"] == "test"

    auto = tmp_path / "auto.csv"
    auto.write_text("prompt,response,reasoning\nWhy?,Because.,Think first.\n", encoding="utf-8")
    assert kinds(pieces(auto)) == [(0, "user", "Why?"), (1, "thought", "Think first."),
                                   (1, "response", "Because.")]


def test_forced_format_and_unknown_format(tmp_path: Path) -> None:
    # Records that look like ShareGPT but use role/content: forcing openai reads them.
    rec = {"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "x.jsonl", [rec])
    report = ReadReport()
    rows = featdisco.split(path, format="openai", report=report).to_pylist()
    assert report.files[0].format == "openai" and not report.files[0].detected
    assert [r["kind"] for r in rows] == ["user", "response"]
    with pytest.raises(featdisco.FeatdiscoError, match="unknown format 'nope'"):
        featdisco.split(path, format="nope")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(featdisco.InputError, match=r"odd\.jsonl, line 1: cannot tell the transcript "
                       r"format \(first record has keys: foo, bar\)"):
        featdisco.split(odd)


def test_meta_fields_model_fallback_and_max_chars(tmp_path: Path) -> None:
    rec = {"run": {"seed": 3}, "tags": ["a", "b"],
           "messages": [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "ok"}]}
    path = write_jsonl(tmp_path / "m.jsonl", [rec])
    stats = SplitStats()
    rows = featdisco.split(path, meta=["run.seed", "tags"], model="fallback-model", max_chars=10,
                           stats=stats).to_pylist()
    assert rows[0]["run.seed"] == "3" and rows[0]["tags"] == '["a","b"]'
    assert rows[0]["model"] == "fallback-model"
    assert rows[0]["truncated"] is True and rows[0]["chars"] == 50
    assert rows[0]["text"].startswith("x" * 10 + "\n[… truncated 40 characters]")
    assert rows[1]["truncated"] is False
    assert stats.truncated == 1


def test_polars_and_pandas_read_the_table(tmp_path: Path) -> None:
    import pandas as pd
    import polars as pl

    rec = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    table = featdisco.split(write_jsonl(tmp_path / "a.jsonl", [rec]))
    assert list(pl.from_arrow(table)["kind"]) == ["user", "response"]  # type: ignore[index]
    assert isinstance(table.to_pandas(), pd.DataFrame)


def test_transcripts_api_is_typed(tmp_path: Path) -> None:
    from featdisco.transcripts import AssistantMessage, ReasoningPart, UserMessage

    rec = {"messages": [{"role": "user", "content": "a"},
                        {"role": "assistant", "content": "<think>t</think>b"}]}
    [t] = list(featdisco.read_transcripts(write_jsonl(tmp_path / "a.jsonl", [rec])))
    assert isinstance(t.messages[0], UserMessage)
    assert isinstance(t.messages[1], AssistantMessage)
    assert t.messages[1].content[0] == ReasoningPart("t")
    # split() also accepts transcripts already read
    assert featdisco.split([t]).num_rows == 3
