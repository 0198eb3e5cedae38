"""Reading a model's reply as JSON, checking it against the schema, spotting refusals.

Models wrap JSON in code fences, add a sentence before it, or stop mid-object; servers
without constrained decoding do all of these. Parsing is forgiving where the intent is
unambiguous (fences, surrounding prose) and strict everywhere else: whatever is returned
has passed the schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import orjson

from featdisco.llm.base import ChatMessage, LLMRequest, LLMResponse

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)
_REFUSAL = re.compile(
    r"^\W*(?:I['’]?m sorry|I am sorry|Sorry,|I apologi[sz]e|I (?:can(?:no|['’])?t|cannot|"
    r"won['’]t|will not|am unable to|['’]m unable to|am not able to|['’]m not able to) "
    r"(?:help|assist|comply|provide|do that|fulfil|fulfill|answer|respond|complete))",
    re.I)


class ReplyProblem(Exception):
    """A reply that arrived but cannot be used. ``reason`` is one of ``refusal``,
    ``empty``, ``truncated``, ``invalid-json`` or ``schema``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_json(text: str) -> Any:
    """The JSON value in ``text``: as is, inside a code fence, or the outermost object or
    array within surrounding prose. Raises ValueError when there is none."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    m = _FENCE.match(text)
    if m:
        try:
            return orjson.loads(m.group(1))
        except orjson.JSONDecodeError:
            pass
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = text.rfind("}" if text[start] == "{" else "]")
        if end > start:
            try:
                return orjson.loads(text[start:end + 1])
            except orjson.JSONDecodeError:
                pass
    raise ValueError("no JSON value found in the reply")


_validators: dict[int, tuple[dict[str, Any], Any]] = {}


def _validator(schema: dict[str, Any]) -> Any:
    # Keyed by identity (the schema object is kept alive beside it, so the id cannot be
    # reused): a stage sends one schema object thousands of times.
    hit = _validators.get(id(schema))
    if hit is None or hit[0] is not schema:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        hit = (schema, cls(schema))
        if len(_validators) > 256:
            _validators.clear()
        _validators[id(schema)] = hit
    return hit[1]


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text[:200]))


def check_reply(response: LLMResponse, schema: dict[str, Any] | None) -> Any:
    """The reply's parsed data (the text itself when no schema was asked for), or a
    :class:`ReplyProblem` saying why it is unusable."""
    text = response.text or ""
    if response.refusal:
        raise ReplyProblem("refusal", f"the model refused: {response.refusal[:200]}")
    if not text.strip():
        raise ReplyProblem("empty", "the reply was empty")
    if schema is None:
        return text
    try:
        data = parse_json(text)
    except ValueError:
        if looks_like_refusal(text):
            raise ReplyProblem("refusal", f"the model refused: {text[:200]}") from None
        if response.finish_reason == "length":
            raise ReplyProblem("truncated", "the reply hit the token limit before the JSON "
                               "was complete") from None
        raise ReplyProblem("invalid-json", f"the reply is not valid JSON: {text[:120]!r}") from None
    errors = sorted(_validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        if data in ({}, []):
            raise ReplyProblem("empty", "the reply was an empty JSON value")
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ReplyProblem("schema", f"the reply breaks the schema at {where}: {e.message[:200]}")
    return data


def repair_request(request: LLMRequest, response: LLMResponse, problem: ReplyProblem) -> LLMRequest:
    """The one re-ask after a bad reply: the conversation so far plus what was wrong."""
    previous = (response.text or response.refusal or "(no reply)")[:4000]
    if request.schema is not None:
        ask = (f"Your previous reply could not be used: {problem.message}. Reply again with "
               "only a JSON value that conforms to this JSON Schema, and nothing else:\n"
               + json.dumps(request.schema, sort_keys=True))
    else:
        ask = f"Your previous reply could not be used: {problem.message}. Please answer again."
    msgs = (*request.messages, ChatMessage("assistant", previous), ChatMessage("user", ask))
    return LLMRequest(msgs, request.schema, request.schema_name, request.sampling,
                      request.prompt_version)
