"""Gemini ``contents`` / ``parts``, REST camelCase or Python-SDK snake_case, with thought parts.

A saved ``GenerateContentResponse`` (``candidates[0].content``) next to the request
``contents`` is appended as the final model turn.
"""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common

_ROLES: dict[str, tm.Role] = {"user": "user", "model": "assistant", "function": "tool", "tool": "tool"}


def _pick(d: Mapping[str, object], camel: str, snake: str) -> object:
    return d.get(camel, d.get(snake))


def sniff(rec: Mapping[str, object]) -> bool:
    contents = rec.get("contents")
    return isinstance(contents, list) and bool(contents) and isinstance(contents[0], dict) \
        and "parts" in contents[0]


def _parts(raw_parts: object, where: str) -> tuple[list[tm.Part], list[tm.Part]]:
    """Returns (message parts, tool results) so function responses become tool messages."""
    parts: list[tm.Part] = []
    results: list[tm.Part] = []
    if raw_parts is None:
        return parts, results
    for j, raw in enumerate(common.get_list({"parts": raw_parts}, "parts", where)):
        pwhere = f"{where}[{j}]"
        part = common.get_dict(raw, pwhere)
        call = _pick(part, "functionCall", "function_call")
        response = _pick(part, "functionResponse", "function_response")
        code = _pick(part, "executableCode", "executable_code")
        code_result = _pick(part, "codeExecutionResult", "code_execution_result")
        if part.get("text") is not None:
            text = common.get_str(part.get("text"), f"{pwhere}.text")
            if part.get("thought") is True:
                if text.strip():
                    parts.append(tm.ReasoningPart(text))
            elif text:
                parts.append(tm.TextPart(text))
        elif isinstance(call, dict):
            parts.append(tm.ToolCallPart(str(call.get("name") or "function"),
                                         common.compact_json(call.get("args", {})),
                                         common.opt_str(call.get("id"))))
        elif isinstance(response, dict):
            results.append(tm.ToolResultPart(common.compact_json(response.get("response", {})),
                                             common.opt_str(response.get("id"))))
        elif isinstance(code, dict):
            parts.append(tm.ToolCallPart("code_execution", common.compact_json(code.get("code", ""))))
        elif isinstance(code_result, dict):
            results.append(tm.ToolResultPart(common.compact_json(code_result.get("output", ""))))
        elif _pick(part, "inlineData", "inline_data") or _pick(part, "fileData", "file_data"):
            parts.append(tm.MediaPart("file"))
        # a part holding only a thoughtSignature carries nothing to read
    return parts, results


def _content(raw: object, where: str, default_role: str | None = None) -> list[tm.Message]:
    content = common.get_dict(raw, where)
    _, role = common.get_role(content.get("role", default_role) or "user", f"{where}.role", _ROLES,
                              "one of user, model", fold=False)
    parts, results = _parts(content.get("parts"), f"{where}.parts")
    out: list[tm.Message] = [tm.make_message("tool", [r]) for r in results]
    if parts or not results:
        out.append(tm.make_message(role, parts))
    return out


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    messages: list[tm.Message] = []
    system = _pick(rec, "systemInstruction", "system_instruction")
    config = rec.get("config")
    if system is None and isinstance(config, dict):
        system = _pick(config, "systemInstruction", "system_instruction")
    if isinstance(system, str):
        messages.append(tm.make_message("system", [tm.TextPart(system)]))
    elif isinstance(system, dict):
        parts, _ = _parts(system.get("parts"), "systemInstruction.parts")
        messages.append(tm.make_message("system", parts))
    for i, raw in enumerate(common.get_list(rec, "contents")):
        messages.extend(_content(raw, f"contents[{i}]"))
    response = rec.get("response")
    candidates = response.get("candidates") if isinstance(response, dict) else rec.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        messages.extend(_content(candidates[0].get("content"), "candidates[0].content", "model"))
    model = common.model_of(rec)
    if model is None and isinstance(response, dict):
        model = common.opt_str(_pick(response, "modelVersion", "model_version"))
    meta = common.scalar_metadata(rec, {"contents", "candidates", "modelVersion", "model_version"})
    return [common.Conversation(messages, model=model, id=common.id_of(rec), metadata=meta)]


SPEC = common.FormatSpec("gemini", "Gemini contents/parts (thought: true)", sniff, parse)
