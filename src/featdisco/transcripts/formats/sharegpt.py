"""ShareGPT: ``conversations`` of ``{"from": ..., "value": ...}`` turns."""

from __future__ import annotations

from typing import Any

from featdisco.errors import BadRecord
from featdisco.transcripts.formats.common import (
    Conversation,
    FormatSpec,
    ParseContext,
    get_dict,
    get_list,
    get_str,
    id_of,
    list_key,
    model_of,
    scalar_metadata,
)
from featdisco.transcripts.model import (
    Message,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    make_message,
)
from featdisco.transcripts.sources import type_name

KEYS = ("conversations", "conversation", "items")
ROLES: dict[str, Role] = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant", "claude": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool", "tool": "tool", "function_response": "tool", "function": "tool",
}


def _key(rec: dict[str, Any]) -> str | None:
    return list_key(rec, KEYS, "from")


def sniff(rec: dict[str, Any]) -> bool:
    return _key(rec) is not None


def parse(rec: dict[str, Any], ctx: ParseContext) -> list[Conversation]:
    key = _key(rec) or "conversations"
    messages: list[Message] = []
    system = rec.get("system")
    if isinstance(system, str) and system:
        messages.append(make_message("system", [TextPart(system)]))
    for i, item in enumerate(get_list(rec, key)):
        where = f"{key}[{i}]"
        turn = get_dict(item, where)
        who = turn.get("from")
        if not isinstance(who, str):
            raise BadRecord("wrong-type", f"{where}.from: expected a string, got {type_name(who)}")
        role = ROLES.get(who.lower())
        if role is None:
            raise BadRecord("unknown-role", f"{where}.from {who!r} is not a known ShareGPT role "
                            "(human, gpt, system, function_call, observation, ...)")
        value = get_str(turn.get("value"), f"{where}.value")
        if who.lower() == "function_call":
            messages.append(make_message("assistant", [ToolCallPart("function", value)]))
        elif role == "tool":
            messages.append(make_message("tool", [ToolResultPart(value)]))
        else:
            messages.append(make_message(role, [TextPart(value)] if value else []))
    return [Conversation(messages, model=model_of(rec), id=id_of(rec),
                         metadata=scalar_metadata(rec, {key, "system"}))]


SPEC = FormatSpec("sharegpt", "ShareGPT conversations (from/value)", sniff, parse)
