"""Anthropic Messages API transcripts: content blocks, with ``system`` beside ``messages``.

``tool_result`` blocks arrive inside user messages; they become tool messages so a tool's
output is never mistaken for something the user wrote.
"""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.errors import BadRecord
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common
from featdisco.transcripts.raw import type_name

_ROLES: dict[str, tm.Role] = {"user": "user", "assistant": "assistant"}
_ANTHROPIC_BLOCKS = {"thinking", "redacted_thinking", "tool_use", "tool_result", "server_tool_use",
                     "web_search_tool_result"}


def sniff(rec: Mapping[str, object]) -> bool:
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[0], dict):
        return False
    if isinstance(rec.get("system"), str | list) and all(
        isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in msgs
    ):
        return True
    for m in msgs:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") in _ANTHROPIC_BLOCKS for b in content
        ):
            return True
    return False


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    messages: list[tm.Message] = []
    system = rec.get("system")
    if system:
        messages.append(tm.SystemMessage(tuple(_blocks(system, "system", "system"))))
    for i, item in enumerate(common.get_list(rec, "messages")):
        where = f"messages[{i}]"
        msg = common.get_dict(item, where)
        _, role = common.get_role(msg.get("role"), f"{where}.role", _ROLES, "one of user, assistant",
                                  fold=False)
        parts = _blocks(msg.get("content"), f"{where}.content", role)
        results = [p for p in parts if isinstance(p, tm.ToolResultPart)]
        rest = [p for p in parts if not isinstance(p, tm.ToolResultPart)]
        for r in results:
            messages.append(tm.ToolMessage((r,), tool_call_id=r.tool_call_id))
        if rest or not results:
            messages.append(tm.make_message("user" if role == "user" else "assistant", rest))
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec),
                                metadata=common.scalar_metadata(rec, {"messages", "system"}))]


def _blocks(content: object, where: str, role: str) -> list[tm.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [tm.TextPart(content)] if content else []
    if not isinstance(content, list):
        raise BadRecord("wrong-type", f"{where}: expected a string or an array of blocks, "
                        f"got {type_name(content)}")
    parts: list[tm.Part] = []
    for j, raw in enumerate(content):
        bwhere = f"{where}[{j}]"
        block = common.get_dict(raw, bwhere)
        btype = block.get("type")
        if btype == "text":
            parts.append(tm.TextPart(common.get_str(block.get("text"), f"{bwhere}.text")))
        elif btype == "thinking":
            parts.append(tm.ReasoningPart(common.get_str(block.get("thinking"), f"{bwhere}.thinking")))
        elif btype == "redacted_thinking":
            parts.append(tm.RedactedReasoningPart())
        elif btype in ("tool_use", "server_tool_use"):
            parts.append(tm.ToolCallPart(common.get_str(block.get("name"), f"{bwhere}.name") or "tool",
                                         common.compact_json(block.get("input", {})),
                                         common.opt_str(block.get("id"))))
        elif btype in ("tool_result", "web_search_tool_result"):
            inner = block.get("content")
            text = (inner if isinstance(inner, str) else
                    "\n".join(p.text for p in _blocks(inner, f"{bwhere}.content", role)
                              if isinstance(p, tm.TextPart)))
            parts.append(tm.ToolResultPart(text, common.opt_str(block.get("tool_use_id")),
                                           is_error=bool(block.get("is_error"))))
        elif btype in ("image", "document", "file", "search_result"):
            parts.append(tm.MediaPart(str(btype)))
        else:
            raise BadRecord("wrong-type", f"{bwhere}.type {btype!r} is not a known content block")
    return parts


SPEC = common.FormatSpec("anthropic", "Anthropic Messages content blocks (thinking, tool_use, ...)", sniff,
                         parse)
