"""Agent transcripts: Claude Code sessions, SWE-agent trajectories, OpenHands event streams.

One assistant step (one model call) gives one thought piece and one response piece (its
text and tool calls); tool output stays in the transcript and never becomes a piece.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import featdisco
from featdisco import ReadReport
from featdisco.transcripts import model as tm
from featdisco.transcripts.split import TOOL_OUTPUT_MAX, split_transcript

FIXTURES = Path(__file__).parent / "fixtures" / "shapes"
SESSION = "7f2a9c1e-3b4d-4e5f-8a6b-1c2d3e4f5a6b"


def split(path: Path, **kw: Any) -> tuple[dict[str, list[tuple[int, str, str]]], ReadReport, list[dict[str, Any]]]:
    report = ReadReport()
    rows = featdisco.split(path, report=report, **kw).to_pylist()
    out: dict[str, list[tuple[int, str, str]]] = {}
    for r in rows:
        out.setdefault(r["transcript_id"], []).append((r["turn"], r["kind"], r["text"]))
    return out, report, rows


def test_claude_code_session_is_one_transcript_of_steps() -> None:
    got, report, rows = split(FIXTURES / "claude_code")
    assert [f.format for f in report.files] == ["claude-code"]
    assert got[SESSION] == [
        (0, "user", "The test test_parse_date fails, can you fix it?"),
        # three lines of one message id are one step: thinking, text and the tool call
        (1, "thought", "I should run the test first to see the failure."),
        (1, "response", 'Let me run the test.\n\n[tool call] Bash({"command":"pytest -k test_parse_date",'
                        '"description":"Run the failing test"})'),
        # turn 2: the test output (a tool result in a user event) is not a user turn
        (3, "response", '[tool call] Edit({"file_path":"/home/ana/proj/dates.py","old_string":"%S",'
                        '"new_string":"%SZ"})'),
        (5, "response", "Fixed: the format string now accepts the trailing Z."),
        (6, "user", "<bash-input>git status --short</bash-input>"),  # the user ran a command:
        (8, "user", "thanks!"),  # turn 7, its output, is tool output, not something the user wrote
    ]
    # the sub-agent's sidechain is a transcript of its own, with its own model
    assert got[f"{SESSION}:sidechain"] == [(0, "user", "Search the repo for other strptime calls."),
                                           (1, "response", "Found one more in utils.py.")]
    main = [r for r in rows if r["transcript_id"] == SESSION]
    assert {r["model"] for r in main} == {"claude-sonnet-4-5-20250929"}
    meta = json.loads(main[0]["metadata"])
    assert meta["summary"] == "Fix failing date parser test"
    assert meta["cwd"] == "/home/ana/proj"
    # bookkeeping events are counted, not silently dropped
    assert meta["skipped_events"] == {"summary": 1, "file-history-snapshot": 1, "system": 1,
                                      "synthetic assistant": 1}  # an API error is not the model's text
    # Claude Code's own injected text is system context, not something the user typed
    assert "init is analyzing" in (main[0]["system"] or "")
    assert main[0]["record"] == "lines 1-18"
    t = next(iter(featdisco.read_transcripts(FIXTURES / "claude_code")))
    tool = [m for m in t.messages if isinstance(m, tm.ToolMessage)]
    assert "unconverted data remains" in tool[0].content[0].content  # kept for the report


def test_swe_agent_trajectories_leave_out_demonstrations_and_observations() -> None:
    got, report, rows = split(FIXTURES / "swe_agent")
    assert {f.format for f in report.files} == {"swe-agent", "mini-swe-agent"}
    marsh = got["marshmallow-code__marshmallow-1867"]
    assert marsh[0] == (0, "user", "We're currently solving the following issue within our repository.\n"
                                   "ISSUE:\nTimeDelta serialization precision")
    assert marsh[1] == (1, "thought", "The bug is likely rounding in _serialize.")
    assert marsh[2][1] == "response" and marsh[2][2].startswith("Let's first look for the field definition.")
    assert marsh[3][0] == 3 and marsh[3][2].startswith("The fix is to round")  # turn 2 is the observation
    assert len(marsh) == 4
    texts = " ".join(t for _, _, t in marsh)
    assert "demo" not in texts and "Found 1 matches" not in texts and "File updated" not in texts
    m_rows = [r for r in rows if r["transcript_id"] == "marshmallow-code__marshmallow-1867"]
    assert {r["model"] for r in m_rows} == {"claude-3-7-sonnet-20250219"}
    meta = json.loads(m_rows[0]["metadata"])
    assert meta["exit_status"] == "submitted" and meta["skipped_history"] == {"demonstration": 2}
    assert m_rows[0]["system"].startswith("SETTING: You are an autonomous programmer")
    # function calling: tool calls in the response, tool messages left out; named after the file
    astro = got["astropy__astropy-12907"]
    assert astro == [
        (0, "user", "<uploaded_files>/testbed</uploaded_files> Fix the bug in astropy separability."),
        (1, "response", "I'll look at the file.\n\n[tool call] str_replace_editor({\"command\": \"view\", "
                        "\"path\": \"/testbed/astropy/modeling/separable.py\"})"),
        (3, "response", "Done.\n\n[tool call] submit({})"),
    ]


def test_swe_agent_0x_history_without_message_types() -> None:
    got, _report, _rows = split(FIXTURES / "swe_agent" / "astropy__astropy-12907-v0.traj")
    assert got["astropy__astropy-12907-v0"] == [
        (0, "user", "We're currently solving the following issue within our repository. Here's the issue "
                    "text:\nISSUE:\nSeparability matrix is wrong for nested models"),
        (1, "response", "DISCUSSION\nList files.\n\n```\nls\n```"),  # then its output: no user turn
    ]


def test_mini_swe_agent_command_output_is_tool_output() -> None:
    got, report, rows = split(FIXTURES / "swe_agent" / "psf__requests-2317.traj.json")
    assert report.files[0].format == "mini-swe-agent"
    assert [(turn, kind) for turn, kind, _ in got["psf__requests-2317"]] == [(0, "user"), (1, "response"),
                                                                           (3, "response")]
    assert "prepare_body(self, data" in rows[1]["tool_output"]
    assert {r["model"] for r in rows} == {"anthropic/claude-sonnet-4-5-20250929"}


def test_openhands_exported_event_stream_and_evaluation_output() -> None:
    got, report, rows = split(FIXTURES / "openhands")
    assert {Path(f.path).name: f.format for f in report.files} == {
        "output.jsonl": "openhands", "trajectory-export.json": "openhands"}
    exported = [v for k, v in got.items() if "__" not in k]
    assert exported == [[
        (0, "user", "Add a README to this repo."),
        # one model response behind two run actions: one step, both calls
        (1, "thought", "Two listings at once will save a step."),
        (1, "response", "I'll inspect the repo and its tests.\n\n[tool call] execute_bash({\"command\": \"ls\"})"
                        "\n\n[tool call] execute_bash({\"command\": \"ls tests\"})"),
        (4, "response", "I added README.md describing setup and tests."),
    ]]
    assert got["django__django-11099"] == [
        (0, "user", "Fix the username validator to reject trailing newlines."),
        (1, "response", "Find the regex first.\n\n[tool call] run({\"command\":\"grep -rn 'regex' "
                        "django/contrib/auth/validators.py\"})"),
        (3, "response", "Use \\A and \\Z anchors instead of ^ and $.\n\n[tool call] finish({\"outputs\":{},"
                        "\"final_thought\":\"Changed the anchors.\"})"),
    ]
    assert got["sympy__sympy-20590"] == [
        (0, "user", "Symbol instances should not have __dict__."),
        (1, "thought", "Symbol likely lost __slots__ in a mixin."),
        (1, "response", "Check the class slots.\n\n[tool call] execute_bash({\"command\": \"grep -n __slots__ "
                        "sympy/core/symbol.py\"})\n\n[tool call] execute_bash({\"command\": \"git log -1\"})"),
    ]
    # older evaluation output: a history of [action, observation] pairs
    assert got["astropy__astropy-14182"] == [
        (0, "user", "Support header rows in RST output."),
        (1, "response", 'Read the writer.\n\n[tool call] run({"command":"cat astropy/io/ascii/rst.py"})')]
    models = {r["transcript_id"]: r["model"] for r in rows}
    assert models["django__django-11099"] == "anthropic/claude-3-5-sonnet-20241022"
    assert models["sympy__sympy-20590"] == "litellm_proxy/gpt-5"
    ts = {t.id: t for t in featdisco.read_transcripts(FIXTURES / "openhands" / "output.jsonl")}
    sympy = ts["sympy__sympy-20590"].messages
    assert [type(m) for m in sympy[1:]] == [tm.UserMessage, tm.AssistantMessage, tm.ToolMessage, tm.ToolMessage]


def _long_session(path: Path, steps: int) -> Path:
    lines = [{"type": "user", "sessionId": "long", "uuid": "u0", "parentUuid": None,
              "message": {"role": "user", "content": "Refactor every module."}}]
    for i in range(steps):
        lines.append({"type": "assistant", "sessionId": "long", "uuid": f"a{i}", "parentUuid": "x",
                      "message": {"id": f"msg_{i}", "role": "assistant", "model": "claude-opus-4-1",
                                  "content": [{"type": "thinking", "thinking": f"Step {i}: next file."},
                                              {"type": "tool_use", "id": f"t{i}", "name": "Read",
                                               "input": {"file_path": f"/src/m{i}.py"}}]}})
        lines.append({"type": "user", "sessionId": "long", "uuid": f"r{i}", "parentUuid": f"a{i}",
                      "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                               "content": "x = 1\n" * 200}]}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_session_of_hundreds_of_steps_reads_whole(tmp_path: Path) -> None:
    path = _long_session(tmp_path / "long.jsonl", 400)
    got, _report, _rows = split(path)
    pieces = got["long"]
    assert len(pieces) == 1 + 2 * 400  # the prompt, then a thought and a response per step
    assert pieces[-1] == (799, "response", '[tool call] Read({"file_path":"/src/m399.py"})')
    assert all("x = 1" not in text for _, _, text in pieces)  # tool output never featurized


def test_tool_output_beside_a_response_is_clipped_once() -> None:
    t = tm.Transcript("t", [tm.UserMessage((tm.TextPart("go"),)),
                         tm.AssistantMessage((tm.ToolCallPart("cat", "{}"),)),
                         tm.ToolMessage((tm.ToolResultPart("a" * 10_000),)), tm.ToolMessage((tm.ToolResultPart("b"),))])
    response = split_transcript(t)[-1]
    assert response.tool_output == "a" * TOOL_OUTPUT_MAX + "…"
    again = tm.Transcript("t", [*t.messages[:2], tm.ToolMessage((tm.ToolResultPart(response.tool_output),))])
    assert split_transcript(again)[-1].tool_output == response.tool_output


def test_long_inspect_agent_sample_with_tool_events(tmp_path: Path) -> None:
    steps = 250
    messages: list[dict[str, Any]] = [
        {"id": "m0", "role": "system", "content": "You are a CTF agent.", "source": "input"},
        {"id": "m1", "role": "user", "content": "Find the flag.", "source": "input"}]
    for i in range(steps):
        messages.append({"id": f"a{i}", "role": "assistant", "source": "generate", "model": "o3",
                         "content": [{"type": "reasoning", "reasoning": f"Try directory {i}.", "redacted": False},
                                     {"type": "text", "text": f"Listing /d{i}."}],
                         "tool_calls": [{"id": f"call_{i}", "function": "bash", "type": "function",
                                         "arguments": {"cmd": f"ls /d{i}"}}]})
        messages.append({"id": f"t{i}", "role": "tool", "tool_call_id": f"call_{i}", "function": "bash",
                         "content": f"file{i}.txt", "error": None})
    log = {"version": 2, "status": "success",
           "eval": {"eval_id": "ev1", "run_id": "run1", "task": "ctf", "model": "openai/o3", "created": "2025-05-01"},
           "samples": [{"id": "challenge-1", "epoch": 1, "input": "Find the flag.", "target": "flag{x}",
                        "messages": messages, "output": {"model": "o3"},
                        "events": [{"event": "tool", "id": "call_0", "function": "bash", "arguments": {"cmd": "ls /d0"},
                                    "result": "file0.txt"}],
                        "scores": {"includes": {"value": "C"}}}]}
    path = tmp_path / "ctf.json"
    path.write_text(json.dumps(log))
    got, report, rows = split(path)
    assert report.files[0].format == "inspect"
    pieces = got["ev1/challenge-1/e1"]
    assert len(pieces) == 1 + 2 * steps
    assert pieces[1:3] == [(1, "thought", "Try directory 0."),
                           (1, "response", 'Listing /d0.\n\n[tool call] bash({"cmd":"ls /d0"})')]
    assert pieces[-1][0] == 2 * steps - 1
    last = rows[-1]
    assert last["tool_output"] == f"file{steps - 1}.txt"
    assert all("file1.txt" not in text for _, _, text in pieces)


def test_a_session_file_of_bookkeeping_only_is_listed_not_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{SESSION}.jsonl").write_bytes((FIXTURES / "claude_code" / f"{SESSION}.jsonl").read_bytes())
    (folder / "0-old.jsonl").write_text(json.dumps({"type": "summary", "summary": "Old chat", "leafUuid": "x"}) + "\n")
    got, report, _rows = split(folder)
    assert SESSION in got
    skipped = {Path(f.path).name: f.error for f in report.files if f.error}
    assert skipped == {"0-old.jsonl": "no conversation in this session file, only bookkeeping (summary, "
                                      "snapshot) lines [no-conversation]"}
