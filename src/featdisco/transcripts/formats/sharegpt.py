"""ShareGPT: ``conversations`` of ``{"from": ..., "value": ...}`` turns."""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common

KEYS = ("conversations", "conversation", "items")
ROLES: dict[str, tm.Role] = {
    "human": "user", "user": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant", "claude": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool", "tool": "tool", "function_response": "tool", "function": "tool",
}


def _key(rec: Mapping[str, object]) -> str | None:
    return common.list_key(rec, KEYS, "from")


def sniff(rec: Mapping[str, object]) -> bool:
    return _key(rec) is not None


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    key = _key(rec) or "conversations"
    messages: list[tm.Message] = []
    system = rec.get("system")
    if isinstance(system, str) and system:
        messages.append(tm.make_message("system", [tm.TextPart(system)]))
    for i, item in enumerate(common.get_list(rec, key)):
        where = f"{key}[{i}]"
        turn = common.get_dict(item, where)
        who, role = common.get_role(turn.get("from"), f"{where}.from", ROLES, "a known ShareGPT role "
                                    "(human, gpt, system, function_call, observation, ...)")
        value = common.get_str(turn.get("value"), f"{where}.value")
        if who.lower() == "function_call":
            messages.append(tm.make_message("assistant", [tm.ToolCallPart("function", value)]))
        elif role == "tool":
            messages.append(tm.make_message("tool", [tm.ToolResultPart(value)]))
        else:
            messages.append(tm.make_message(role, [tm.TextPart(value)] if value else []))
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec),
                                metadata=common.scalar_metadata(rec, {key, "system"}))]


SPEC = common.FormatSpec("sharegpt", "ShareGPT conversations (from/value)", sniff, parse)
