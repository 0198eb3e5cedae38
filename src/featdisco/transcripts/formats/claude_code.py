"""Claude Code session logs (``~/.claude/projects/<project>/<session>.jsonl``).

A session is a whole file of events, one per line: ``user`` and ``assistant`` events
carrying an Anthropic message, plus ``summary``, ``system`` and ``file-history-snapshot``
bookkeeping. Claude Code writes one line per content block, so lines sharing a
``message.id`` are one assistant step (its thinking, its text and its tool calls).
``tool_result`` blocks, which arrive in ``user`` events, are tool output, never user turns;
compaction summaries Claude Code injects itself are kept as system text; ``isMeta`` lines
(command caveats, expanded command prompts) are nobody's text and are counted in
``skipped_events``. Sidechain (sub-agent) events are a transcript of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common
from featdisco.transcripts.raw import RawRecord

_BOOKKEEPING = {"summary", "file-history-snapshot", "queue-operation", "system"}


def sniff(rec: Mapping[str, object]) -> bool:
    kind = rec.get("type")
    if kind == "summary":
        return "leafUuid" in rec
    if kind == "file-history-snapshot":
        return "snapshot" in rec
    if kind == "queue-operation":
        return "sessionId" in rec
    return kind in ("user", "assistant", "system") and "sessionId" in rec and "uuid" in rec


def group_session(path: Path, records: Iterator[RawRecord],
                  log: Callable[[str], None]) -> Iterator[RawRecord]:
    """The file's events as one record (a session); unreadable lines pass through first."""
    return common.group_file(records, "claude_code_events", lambda first, last: first if first == last
                             else f"lines {first.removeprefix('line ')}-{last.removeprefix('line ')}")


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    events = rec.get("claude_code_events")
    if not isinstance(events, list):  # a single event (a file read with --format and no grouping)
        events = [rec]
    main = [e for e in events if isinstance(e, dict) and not e.get("isSidechain")]
    side = [e for e in events if isinstance(e, dict) and e.get("isSidechain")]
    out = []
    for chain, suffix in ((main, None), (side, "sidechain")):
        if not any(e.get("type") in ("user", "assistant") for e in chain):
            continue
        out.append(_conversation(chain, suffix, events))
    return out


def _conversation(events: Sequence[Mapping[str, object]], suffix: str | None,
                  all_events: Sequence[Any]) -> common.Conversation:
    """One chain's transcript; ``all_events`` is the raw session, for its summary lines."""
    messages: list[tm.Message | list[tm.Part]] = []  # an assistant step stays a mutable list until the end
    steps: dict[str, list[tm.Part]] = {}
    skipped: Counter[str] = Counter()
    model: str | None = None
    for ev in events:
        kind = ev.get("type")
        msg = ev.get("message")
        if kind in _BOOKKEEPING or not isinstance(msg, dict):
            skipped[str(kind)] += 1
            continue
        content = msg.get("content")
        if kind == "assistant":
            if ev.get("isApiErrorMessage") or msg.get("model") == "<synthetic>":
                skipped["synthetic assistant"] += 1  # Claude Code's own text (API errors, interrupts)
                continue
            if model is None and isinstance(msg.get("model"), str):
                model = msg["model"]
            mid = msg.get("id") if isinstance(msg.get("id"), str) else None
            parts = steps.get(mid) if mid else None
            if parts is None:
                parts = []
                messages.append(parts)
                if mid:
                    steps[mid] = parts
            parts.extend(_blocks(content, skipped))
        elif kind == "user":
            parts = _blocks(content, skipped)
            results = [p for p in parts if isinstance(p, tm.ToolResultPart)]
            rest = [p for p in parts if not isinstance(p, tm.ToolResultPart)]
            messages.extend(tm.ToolMessage((r,), tool_call_id=r.tool_call_id) for r in results)
            if rest:
                if ev.get("isMeta"):  # Claude Code's own lines (command caveats, expansions): nobody's text
                    skipped["meta"] += 1
                    continue
                injected = ev.get("isCompactSummary") or ev.get("isVisibleInTranscriptOnly")
                if injected:
                    messages.append(tm.SystemMessage(tuple(rest)))
                elif _command_output(rest):
                    text = "\n".join(p.text for p in rest if isinstance(p, tm.TextPart))
                    messages.append(tm.ToolMessage((tm.ToolResultPart(text),), name="local-command"))
                else:
                    messages.append(tm.UserMessage(tuple(rest)))
    first: Mapping[str, object] = next((e for e in events if e.get("sessionId")), {})
    meta: dict[str, object] = {k: first[k] for k in ("cwd", "gitBranch", "version")
                               if isinstance(first.get(k), str)}
    titles = [e["summary"] for e in all_events if e.get("type") == "summary" and isinstance(e.get("summary"), str)]
    if titles:
        meta["summary"] = titles[-1]
    if skipped:
        meta["skipped_events"] = dict(skipped)
    session = first.get("sessionId")
    agent = first.get("agentId")
    tid = f"{session}:{agent}" if isinstance(session, str) and isinstance(agent, str) else session
    final: list[tm.Message] = [tm.AssistantMessage(tuple(m)) if isinstance(m, list) else m for m in messages]
    return common.Conversation(final, model=model, id=tid if isinstance(tid, str) else None, suffix=suffix,
                               metadata=meta)


_OUTPUT_TAGS = ("<local-command-stdout>", "<local-command-stderr>", "<bash-stdout>", "<bash-stderr>",
                "<command-name>", "<command-message>", "<local-command-caveat>")


def _command_output(parts: Sequence[tm.Part]) -> bool:
    """A command the user ran in Claude Code (``/clear``, ``/cost``, ``!ls``) and its output:
    logged as user events, but words to the program, not to the model, so they are kept
    as tool output and give no user piece."""
    texts = [p.text.lstrip() for p in parts if isinstance(p, tm.TextPart)]
    return bool(texts) and len(texts) == len(parts) and all(t.startswith(_OUTPUT_TAGS) for t in texts)


def _blocks(content: object, skipped: Counter[str]) -> list[tm.Part]:
    """Anthropic content blocks, leniently: a block type this version does not know is
    counted in ``skipped_events`` rather than losing the whole session."""
    if isinstance(content, str):
        return [tm.TextPart(content)] if content.strip() else []
    if not isinstance(content, list):
        return []
    parts: list[tm.Part] = []
    for block in content:
        if isinstance(block, str):
            parts.append(tm.TextPart(block))
            continue
        if not isinstance(block, dict):
            skipped["malformed block"] += 1
            continue
        btype = block.get("type")
        if btype == "text" and isinstance(block.get("text"), str):
            parts.append(tm.TextPart(block["text"]))
        elif btype == "thinking" and isinstance(block.get("thinking"), str):
            parts.append(tm.ReasoningPart(block["thinking"]))
        elif btype == "redacted_thinking":
            parts.append(tm.RedactedReasoningPart())
        elif btype in ("tool_use", "server_tool_use"):
            parts.append(tm.ToolCallPart(str(block.get("name") or "tool"), common.compact_json(block.get("input", {})),
                                         common.opt_str(block.get("id"))))
        elif btype == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else "\n".join(
                p.text for p in _blocks(inner, skipped) if isinstance(p, tm.TextPart))
            tid = block.get("tool_use_id")
            parts.append(tm.ToolResultPart(text, tid if isinstance(tid, str) else None,
                                           is_error=bool(block.get("is_error"))))
        elif btype in ("image", "document"):
            parts.append(tm.MediaPart(btype))
        else:
            skipped[f"block {btype}"] += 1
    return parts


SPEC = common.FormatSpec("claude-code", "Claude Code session logs (one session per .jsonl file)", sniff, parse,
                         group=group_session,
                         empty_ok="no conversation in this session file, only bookkeeping (summary, snapshot) lines")
