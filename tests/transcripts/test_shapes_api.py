"""Request/response API logs, OpenAI Batch files and Responses API items read as transcripts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import featdisco
from featdisco import ReadReport

FIXTURES = Path(__file__).parent / "fixtures" / "shapes"


def split(path: Path, **kw: Any) -> tuple[list[dict[str, Any]], ReadReport]:
    report = ReadReport()
    rows = featdisco.split(path, report=report, **kw).to_pylist()
    return rows, report


def by_transcript(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, str, str]]]:
    out: dict[str, list[tuple[int, str, str]]] = {}
    for r in rows:
        out.setdefault(r["transcript_id"], []).append((r["turn"], r["kind"], r["text"]))
    return out


def test_request_response_logs_of_chat_messages_and_responses_endpoints() -> None:
    rows, report = split(FIXTURES / "api_log.jsonl")
    assert report.files[0].format == "api-log"
    got = by_transcript(rows)
    assert got["log-1"] == [(0, "user", "Is 91 prime?"), (1, "thought", "91 = 7 * 13, so it is composite."),
                            (1, "response", "No: 91 = 7 × 13.")]
    assert got["log-2"] == [(0, "user", "What's the weather in Paris?"),
                            (1, "thought", "I need the weather tool."),
                            (1, "response", 'Let me check.\n\n[tool call] get_weather({"city":"Paris"})')]
    # n=2: each choice is its own transcript with the same prompt
    assert got["log-3:choice-0"][-1] == (1, "response", "Blue.")
    assert got["log-3:choice-1"][-1] == (1, "response", "Teal.")
    # a failed call is an error with its reason, not a prompt-only transcript
    assert "log-4" not in got
    assert dict(report.failed_requests) == {"rate_limit_exceeded": 1}
    # a Responses request/response pair: instructions are the system prompt
    assert got["log-5"] == [(0, "user", "Weather in Oslo?"), (1, "thought", "Call the weather tool for Oslo."),
                            (1, "response", '[tool call] get_weather({"city":"Oslo"})')]
    # an HTTP-level log: the request and response bodies inside
    assert got["log-7"] == [(0, "user", "Ping?"), (1, "response", "Pong.")]
    # a tracing export's generation: input messages, output message
    assert got["gen-6"] == [(0, "user", "Translate 'cat' to German."), (1, "response", "Katze")]
    models = {r["transcript_id"]: r["model"] for r in rows}
    assert models["log-1"] == "deepseek-reasoner"
    assert models["gen-6"] == "gpt-4o"
    assert models["log-3:choice-0"] == "gpt-4o-mini-2024-07-18"  # the response names the served model
    systems = {r["transcript_id"]: r["system"] for r in rows}
    assert systems["log-1"] == "You are a careful assistant."
    assert systems["log-2"] == "Answer briefly."
    assert systems["log-5"] == "Be terse."


def test_messages_with_a_completion_beside_them() -> None:
    rows, report = split(FIXTURES / "messages_completion.jsonl")
    assert report.files[0].format == "messages-completion"
    got = by_transcript(rows)
    assert got["mc-1"] == [(0, "user", "Say hi in French."), (1, "response", "Bonjour !")]
    assert got["mc-2"] == [(0, "user", "Greet me."), (1, "thought", "Formal greeting."),
                           (1, "response", "Good afternoon.")]


def test_batch_output_joined_to_its_input_by_custom_id(tmp_path: Path) -> None:
    rows, report = split(FIXTURES / "batch")
    formats = {Path(f.path).name: f.format for f in report.files}
    assert formats == {"batch_input.jsonl": "openai-batch-input", "batch_output.jsonl": "openai-batch"}
    got = by_transcript(rows)
    # output lines come in another order than the requests; each answer meets its own prompt
    assert got["request-1"] == [(0, "user", "What is 2+2?"), (1, "response", "4")]
    assert got["request-3"] == [(0, "user", "Spell 'cat' backwards."), (1, "response", "tac")]
    # failed requests (an error line, a non-200 response) are errors with their reason, not
    # user-only transcripts
    assert set(got) == {"request-1", "request-3"}
    assert dict(report.failed_requests) == {"server_error": 1, "http-400 integer_below_min_value": 1}
    assert any("failed requests (errors with no answer, not transcripts): 2" in line for line in report.notes())
    assert {r["model"] for r in rows} == {"gpt-4o-mini-2024-07-18"}
    # the output file alone: answers only, and the log says the prompts are missing
    shutil.copy(FIXTURES / "batch" / "batch_output.jsonl", tmp_path / "out.jsonl")
    logs: list[str] = []
    alone = featdisco.read_transcripts(tmp_path / "out.jsonl", log=logs.append)
    assert [t.id for t in alone] == ["request-3", "request-1"]
    assert any("no batch input file beside it" in line for line in logs)


def test_anthropic_message_batch_results_joined_to_their_requests() -> None:
    rows, report = split(FIXTURES / "anthropic_batch")
    assert sorted(f.format for f in report.files) == ["openai-batch", "openai-batch-input"]
    got = by_transcript(rows)
    assert got["q-1"] == [(0, "user", "Why is the sky blue?"),
                          (1, "response", "Rayleigh scattering: blue light scatters most.")]
    assert "q-2" not in got  # errored: counted with its reason, not a user-only transcript
    assert dict(report.failed_requests) == {"invalid_request_error": 1}
    meta = {r["transcript_id"]: json.loads(r["metadata"]) for r in rows}
    assert meta["q-1"]["result"] == "succeeded"
    assert {r["transcript_id"]: r["system"] for r in rows}["q-1"] == "Be brief."


def test_responses_api_items_give_steps_with_reasoning_summaries_and_tool_calls() -> None:
    rows, report = split(FIXTURES / "responses.jsonl")
    assert report.files[0].format == "openai-responses"
    got = by_transcript(rows)
    assert got["resp_67ccd2bed1ec8190"] == [
        (0, "user", "How many files are in /tmp?"),
        (1, "thought", "**Counting files**\n\nI should list /tmp."),
        (1, "response", '[tool call] shell({"cmd": "ls /tmp | wc -l"})'),
        # turn 2 is the tool's output: kept in the transcript, never a piece
        (3, "thought", "The tool says 42."),
        (3, "response", "There are 42 files in /tmp."),
    ]
    # encrypted reasoning with no summary is counted as redacted, never turned into text
    resp2 = [r for r in rows if r["transcript_id"] == "resp_2"]
    assert [(r["kind"], r["text"], r["redacted"]) for r in resp2] == [
        ("user", "Think quietly, then say OK.", 0), ("response", "OK", 0)]
    ts = list(featdisco.read_transcripts(FIXTURES / "responses.jsonl"))
    assert ts[0].system == "You are a coding agent."
    assert [m.role for m in ts[0].messages] == ["system", "user", "assistant", "tool", "assistant"]
