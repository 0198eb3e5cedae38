"""Reading a model's reply as JSON, checking it against the schema, spotting refusals.

Models wrap JSON in code fences, add a sentence before it, or stop mid-object; servers
without constrained decoding do all of these. Parsing is forgiving where the intent is
unambiguous (fences, surrounding prose) and strict everywhere else: whatever is returned
has passed the schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
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


Check = Callable[[Any], bool]

# Keywords that only annotate: they never make an instance invalid.
_ANNOTATIONS = frozenset({"title", "description", "$comment", "default", "examples",
                          "$schema", "$id"})
# JSON type -> the Python types orjson parses it to. jsonschema also counts 2.0 as an
# integer; the fast check leaves that case to it.
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
    "number": (int, float), "boolean": (bool,), "null": (type(None),),
}
_SCALARS = (str, int, float, bool, type(None))


def fast_check(schema: Any) -> Check | None:
    """A predicate that is True only for instances ``schema`` certainly accepts, for the
    keywords the featurize, naming and rating schemas use; None when the schema uses any
    other keyword. jsonschema's validator costs ~20 us for a small reply and ~90 us for a
    15-feature one, in object churn alone, a tenth or more of the client's CPU per call;
    the predicate costs a few. Whatever it does not accept goes to jsonschema, which has
    the last word and the error message, so a gap here can cost time but never let a bad
    reply through."""
    if not isinstance(schema, dict):
        return None
    checks: list[Check] = []
    for k, v in schema.items():
        if k in _ANNOTATIONS:
            continue
        if k == "type":
            names = [v] if isinstance(v, str) else v
            if not isinstance(names, list) or not all(n in _TYPES for n in names):
                return None
            allowed = frozenset(t for n in names for t in _TYPES[n])
            checks.append(_of_type(allowed))
        elif k == "properties":
            if not isinstance(v, dict):
                return None
            props: list[tuple[str, Check]] = []
            for name, sub in v.items():
                c = fast_check(sub)
                if c is None:
                    return None
                props.append((name, c))
            checks.append(partial(_properties, props))
        elif k == "required":
            if not isinstance(v, list):
                return None
            checks.append(_required(v))
        elif k == "additionalProperties":
            known = frozenset(schema.get("properties") or ())
            if v is False:
                checks.append(_no_extra(known))
            elif v is not True:
                extra = fast_check(v)
                if extra is None:
                    return None
                checks.append(_extra(known, extra))
        elif k == "items":
            item = fast_check(v)
            if item is None:
                return None
            checks.append(_items(item))
        elif k in ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum"):
            if type(v) is not int and type(v) is not float:
                return None
            checks.append(_bound(k, v))
        elif k == "enum":
            if not isinstance(v, list):
                return None
            checks.append(_enum(v))
        else:
            return None
    if len(checks) == 1:
        return checks[0]
    return partial(_all_of, tuple(checks))


def _all_of(checks: tuple[Check, ...], x: Any) -> bool:
    for c in checks:  # noqa: SIM110 - a plain loop: no generator frame per reply
        if not c(x):
            return False
    return True


def _properties(props: list[tuple[str, Check]], x: Any) -> bool:
    if type(x) is dict:
        for name, check in props:
            if name in x and not check(x[name]):
                return False
    return True


def _of_type(allowed: frozenset[type]) -> Check:
    return lambda x: type(x) in allowed


def _required(names: list[str]) -> Check:
    return lambda x: type(x) is not dict or all(n in x for n in names)


def _no_extra(known: frozenset[str]) -> Check:
    return lambda x: type(x) is not dict or known.issuperset(x)


def _extra(known: frozenset[str], extra: Check) -> Check:
    return lambda x: type(x) is not dict or all(extra(x[n]) for n in x if n not in known)


def _items(item: Check) -> Check:
    return lambda x: type(x) is not list or all(map(item, x))


def _enum(options: list[Any]) -> Check:
    return lambda x: isinstance(x, _SCALARS) and any(
        type(o) is type(x) and o == x for o in options)


def _bound(keyword: str, limit: float) -> Check:
    if keyword == "minItems":
        return lambda x: type(x) is not list or len(x) >= limit
    if keyword == "maxItems":
        return lambda x: type(x) is not list or len(x) <= limit
    if keyword == "minLength":
        return lambda x: type(x) is not str or len(x) >= limit
    if keyword == "maxLength":
        return lambda x: type(x) is not str or len(x) <= limit
    if keyword == "minimum":
        return lambda x: (type(x) is not int and type(x) is not float) or x >= limit
    return lambda x: (type(x) is not int and type(x) is not float) or x <= limit


_validators: dict[int, tuple[dict[str, Any], Any, Check | None]] = {}


def _validator(schema: dict[str, Any]) -> tuple[Any, Check | None]:
    # Keyed by identity (the schema object is kept alive beside it, so the id cannot be
    # reused): a stage sends one schema object thousands of times.
    hit = _validators.get(id(schema))
    if hit is None or hit[0] is not schema:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        hit = (schema, cls(schema), fast_check(schema))
        if len(_validators) > 256:
            _validators.clear()
        _validators[id(schema)] = hit
    return hit[1], hit[2]


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
    validator, fast = _validator(schema)
    if fast is not None and fast(data):
        return data
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
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
