"""OpenAI-style chat messages (``role`` / ``content``), the lingua franca of transcript logs.

Covers content-part lists, ``reasoning_content`` (DeepSeek, vLLM), ``reasoning`` and
``reasoning_details`` (OpenRouter), ``thinking`` (Ollama), tool calls (current and legacy
``function_call``), tool results, and Arena-Hard's assistant ``content`` object holding
``thought`` / ``answer``. Inspect AI messages share this shape and this parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from featdisco.errors import BadRecord
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common
from featdisco.transcripts.raw import type_name

MESSAGE_KEYS = ("messages", "conversation", "conversations", "chat", "dialog")
ROLE_ALIASES: dict[str, tm.Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}
_TEXT_TYPES = {"text", "input_text", "output_text"}
_MEDIA_TYPES = {"image_url", "image", "input_image", "input_audio", "audio", "file", "input_file",
                "video", "document"}
_REASONING_TYPES = {"reasoning", "thinking", "reasoning_text"}


def messages_key(rec: Mapping[str, object]) -> str | None:
    return common.list_key(rec, MESSAGE_KEYS, "role")


def sniff(rec: Mapping[str, object]) -> bool:
    return messages_key(rec) is not None


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    key = messages_key(rec) or "messages"
    items = common.get_list(rec, key)
    messages = parse_messages(items, key)
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec),
                                metadata=common.scalar_metadata(rec, {key}))]


def parse_messages(items: Sequence[object], prefix: str) -> list[tm.Message]:
    out: list[tm.Message] = []
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]"
        msg = common.get_dict(item, where)
        _, role = common.get_role(msg.get("role"), f"{where}.role", ROLE_ALIASES,
                                  "one of system, developer, user, assistant, tool, function")
        parts = content_parts(msg.get("content"), f"{where}.content", role)
        if role == "assistant":
            parts = _reasoning_fields(msg, where) + parts + _tool_calls(msg, where)
        if role == "tool":
            text = "\n".join(p.text for p in parts if isinstance(p, tm.TextPart))
            err = msg.get("error")
            parts = [tm.ToolResultPart(text, common.opt_str(msg.get("tool_call_id")), is_error=bool(err))]
        name = msg.get("name") or msg.get("function")
        out.append(tm.make_message(role, parts, tool_call_id=common.opt_str(msg.get("tool_call_id")),
                                   name=common.opt_str(name)))
    return out


def content_parts(content: object, where: str, role: tm.Role) -> list[tm.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [tm.TextPart(content)] if content else []
    if isinstance(content, dict):
        if role == "assistant" and ("answer" in content or "thought" in content):  # Arena-Hard v2
            parts: list[tm.Part] = []
            thought = common.get_str(content.get("thought"), f"{where}.thought")
            if thought:
                parts.append(tm.ReasoningPart(thought))
            answer = common.get_str(content.get("answer"), f"{where}.answer")
            if answer:
                parts.append(tm.TextPart(answer))
            return parts
        content = [content]
    if not isinstance(content, list):
        raise BadRecord("wrong-type", f"{where}: expected a string or an array of parts, "
                        f"got {type_name(content)}")
    parts = []
    for j, raw in enumerate(content):
        pwhere = f"{where}[{j}]"
        if isinstance(raw, str):
            parts.append(tm.TextPart(raw))
            continue
        part = common.get_dict(raw, pwhere)
        ptype = part.get("type", "text")
        if ptype in _TEXT_TYPES:
            parts.append(tm.TextPart(common.get_str(part.get("text"), f"{pwhere}.text")))
        elif ptype == "refusal":
            parts.append(tm.TextPart(common.get_str(part.get("refusal"), f"{pwhere}.refusal")))
        elif ptype in _REASONING_TYPES:
            if part.get("redacted"):
                parts.append(tm.RedactedReasoningPart())
            else:
                text = part.get("reasoning", part.get("thinking", part.get("text")))
                parts.append(tm.ReasoningPart(common.get_str(text, f"{pwhere}.reasoning")))
        elif ptype in _MEDIA_TYPES:
            parts.append(tm.MediaPart(str(ptype)))
        elif ptype in ("tool_use", "tool_call", "function_call"):
            parts.append(tm.ToolCallPart(str(part.get("name", part.get("function", "tool"))),
                                         common.compact_json(part.get("input", part.get("arguments", {}))),
                                         common.opt_str(part.get("id"))))
        elif isinstance(text := part.get("text"), str):
            parts.append(tm.TextPart(text))
        else:
            parts.append(tm.MediaPart(str(ptype)))
    return parts


def _reasoning_fields(msg: Mapping[str, object], where: str) -> list[tm.Part]:
    parts: list[tm.Part] = []
    for key in ("reasoning_content", "reasoning", "thinking"):
        value = msg.get(key)
        if isinstance(value, str):
            if value.strip():  # the first field with text; an empty one does not hide the next
                parts.append(tm.ReasoningPart(value))
                break
            continue
        if isinstance(value, dict):  # {"summary": ...} or {"content": ...}
            text = value.get("content") or value.get("summary") or value.get("text")
            if isinstance(text, str) and text.strip():
                parts.append(tm.ReasoningPart(text))
            break
        if value is not None:
            raise BadRecord("wrong-type", f"{where}.{key}: expected a string, got {type_name(value)}")
    details = msg.get("reasoning_details")
    if isinstance(details, list) and not parts:
        for d in details:
            if not isinstance(d, dict):
                continue
            text = d.get("text") or d.get("summary")
            if isinstance(text, str) and text.strip():
                parts.append(tm.ReasoningPart(text))
            elif d.get("type") == "reasoning.encrypted" or d.get("data"):
                parts.append(tm.RedactedReasoningPart())
    return parts


def _tool_calls(msg: Mapping[str, object], where: str) -> list[tm.Part]:
    parts: list[tm.Part] = []
    calls = msg.get("tool_calls")
    if calls is not None:
        for k, call in enumerate(common.get_list(msg, "tool_calls", f"{where}.tool_calls")):
            c = common.get_dict(call, f"{where}.tool_calls[{k}]")
            fn = c.get("function")
            if isinstance(fn, dict):  # OpenAI: {"name", "arguments": "<json text>"}
                name, args = fn.get("name"), fn.get("arguments")
            else:  # Inspect AI: "function": name, "arguments": {...}
                name, args = fn, c.get("arguments")
            parts.append(tm.ToolCallPart(str(name or "tool"), common.compact_json(args if args is not None else {}),
                                         common.opt_str(c.get("id"))))
    legacy = msg.get("function_call")
    if isinstance(legacy, dict):
        parts.append(tm.ToolCallPart(str(legacy.get("name") or "function"),
                                     common.compact_json(legacy.get("arguments", {}))))
    return parts


SPEC = common.FormatSpec("openai", "OpenAI chat messages (role/content)", sniff, parse)
