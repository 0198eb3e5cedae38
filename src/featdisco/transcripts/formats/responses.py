"""OpenAI Responses API items: ``input`` and ``output`` lists of typed items.

A response's output is a run of items (``reasoning`` with its summary, ``message`` with
``output_text``, ``function_call``, built-in ``*_call`` tools); consecutive model-side
items are one assistant step, so a step's reasoning becomes its thought piece and its
text and calls its response piece. ``function_call_output`` items are tool results.
"""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.errors import BadRecord
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common
from featdisco.transcripts.formats.openai import ROLE_ALIASES, content_parts
from featdisco.transcripts.raw import type_name

_OUTPUT_TYPES = {"message", "reasoning", "function_call", "function_call_output", "custom_tool_call",
                 "custom_tool_call_output", "web_search_call", "file_search_call", "computer_call",
                 "computer_call_output", "code_interpreter_call", "image_generation_call",
                 "local_shell_call", "local_shell_call_output", "mcp_call", "mcp_list_tools",
                 "mcp_approval_request", "mcp_approval_response", "item_reference"}
_RESULT_TYPES = {"function_call_output", "custom_tool_call_output", "computer_call_output",
                 "local_shell_call_output", "mcp_approval_response"}


def is_items(value: object) -> bool:
    """A list of Responses items (every typed one of a known type, at least one typed)."""
    if not isinstance(value, list) or not value:
        return False
    typed = [v.get("type") for v in value if isinstance(v, dict) and "type" in v]
    return bool(typed) and all(t in _OUTPUT_TYPES for t in typed)


def sniff(rec: Mapping[str, object]) -> bool:
    output = rec.get("output")
    return isinstance(output, list) and is_items(output) and (
        rec.get("object") == "response" or "input" in rec or "instructions" in rec
        or any(isinstance(v, dict) and v.get("type") in ("reasoning", "function_call") for v in output)
        or isinstance(rec.get("model"), str))


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    messages = request_messages(rec, "")
    messages += items_to_messages(rec.get("output"), "output")
    meta = common.scalar_metadata(rec, {"input", "output", "instructions", "object", "created_at"})
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec), metadata=meta)]


def request_messages(req: Mapping[str, object], prefix: str) -> list[tm.Message]:
    """``instructions`` and ``input`` of a Responses request (input a string or items)."""
    where = f"{prefix}." if prefix else ""
    messages: list[tm.Message] = []
    instructions = req.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append(tm.SystemMessage((tm.TextPart(instructions),)))
    value = req.get("input")
    if isinstance(value, str):
        if value:
            messages.append(tm.make_message("user", [tm.TextPart(value)]))
    elif value is not None:
        if not isinstance(value, list):
            raise BadRecord("wrong-type", f"{where}input: expected a string or an array of items, "
                            f"got {type_name(value)}")
        messages += items_to_messages(value, f"{where}input")
    return messages


def items_to_messages(items: object, where: str) -> list[tm.Message]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadRecord("wrong-type", f"{where}: expected an array of items, got {type_name(items)}")
    out: list[tm.Message] = []
    step: list[tm.Part] = []  # the current assistant step's parts

    def close_step() -> None:
        if step:
            out.append(tm.AssistantMessage(tuple(step)))
            step.clear()

    for i, raw in enumerate(items):
        iwhere = f"{where}[{i}]"
        item = common.get_dict(raw, iwhere)
        itype = item.get("type", "message")
        if itype == "message" or (itype is None and "role" in item):
            role = ROLE_ALIASES.get(str(item.get("role", "assistant")).lower())
            if role is None:
                raise BadRecord("unknown-role", f"{iwhere}.role {item.get('role')!r} is not one of "
                                "system, developer, user, assistant")
            parts = content_parts(item.get("content"), f"{iwhere}.content", role)
            if role == "assistant":
                step.extend(parts)
                continue
            close_step()
            out.append(tm.make_message(role, parts))
        elif itype == "reasoning":
            step.extend(_reasoning(item, iwhere))
        elif itype in _RESULT_TYPES:
            close_step()
            output = item.get("output", item.get("content"))
            text = output if isinstance(output, str) else common.compact_json(output) if output is not None else ""
            call_id = common.opt_str(item.get("call_id"))
            out.append(tm.ToolMessage((tm.ToolResultPart(text, call_id),), tool_call_id=call_id))
        elif itype in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input", ""))
            step.append(tm.ToolCallPart(common.get_str(item.get("name"), f"{iwhere}.name") or "tool",
                                        common.compact_json(args), common.opt_str(item.get("call_id"))))
        elif isinstance(itype, str) and itype.endswith("_call"):  # built-in tools: web search, ...
            detail = item.get("action") or item.get("query") or item.get("queries") or item.get("code") or {}
            step.append(tm.ToolCallPart(itype.removesuffix("_call"), common.compact_json(detail),
                                        common.opt_str(item.get("id"))))
        # item_reference, mcp_list_tools, approval requests: no text of the model's own
    close_step()
    return out


def _reasoning(item: Mapping[str, object], where: str) -> list[tm.Part]:
    """Full reasoning text where the provider returns it, else the summary; encrypted only
    counts as redacted reasoning."""
    texts: list[str] = []
    for key in ("content", "summary"):
        value = item.get(key)
        if isinstance(value, list):
            for j, block in enumerate(value):
                b = common.get_dict(block, f"{where}.{key}[{j}]")
                text = common.get_str(b.get("text"), f"{where}.{key}[{j}].text")
                if text.strip():
                    texts.append(text)
        elif isinstance(value, str) and value.strip():
            texts.append(value)
        if texts:
            break
    if texts:
        return [tm.ReasoningPart("\n\n".join(texts))]
    if item.get("encrypted_content"):
        return [tm.RedactedReasoningPart()]
    return []


SPEC = common.FormatSpec("openai-responses", "OpenAI Responses API items (input, output: reasoning, message, "
                         "function_call, ...)", sniff, parse)
