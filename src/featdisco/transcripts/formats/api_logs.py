"""Request/response logs: what a proxy, a gateway or a logging wrapper writes per API call.

Three shapes:

* ``{request: {...}, response: {...}}`` — the request is a Chat Completions, Messages
  (Anthropic) or Responses body; the response is what that endpoint returned. Each of
  several ``choices`` is its own transcript (suffix ``choice-N``).
* ``{messages: [...], completion: ...}`` — the prompt as messages, the completion as a
  string or an assistant message.
* OpenAI Batch output files (``{custom_id, response: {status_code, body}, error}``), joined
  by ``custom_id`` to the batch input file beside them (``{custom_id, method, url, body}``):
  the input gives the prompt, the output the answer. Output lines come in any order.
  Anthropic Message Batches results (``{custom_id, result: {type, message}}``) join the same
  way to their requests (``{custom_id, params}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from featdisco.errors import BadRecord
from featdisco.transcripts.formats import anthropic, common, responses
from featdisco.transcripts.formats.openai import content_parts, parse_messages
from featdisco.transcripts.model import AssistantMessage, Message, TextPart, make_message
from featdisco.transcripts.raw import RawRecord
from featdisco.transcripts.sources import JSONL_SUFFIXES, iter_raw

_REQUEST_KEYS = ("request", "req", "request_body")
_RESPONSE_KEYS = ("response", "resp", "response_body")
_COMPLETION_KEYS = ("completion", "output", "response", "generation")


# ---------------------------------------------------------------- {request, response}


def _pair(rec: Mapping[str, object]) -> tuple[Mapping[str, object], object] | None:
    """The record's request body and its response (either may still be any JSON value)."""
    for rk in _REQUEST_KEYS:
        req = rec.get(rk)
        if isinstance(req, dict) and isinstance(req.get("body"), dict):  # {request: {url, headers, body}}
            req = req["body"]
        if isinstance(req, dict) and any(k in req for k in ("messages", "input", "prompt")):
            for sk in _RESPONSE_KEYS:
                if sk in rec and sk != rk:
                    return req, rec[sk]
    # tracing exports (Langfuse, LangSmith generations): input messages, output a message or body
    inp, out = rec.get("input"), rec.get("output")
    if isinstance(out, dict) and ("role" in out or "choices" in out or "content" in out):
        if isinstance(inp, dict) and isinstance(inp.get("messages"), list):
            return inp, out
        if isinstance(inp, list) and inp and all(isinstance(m, dict) and "role" in m and "type" not in m
                                                 for m in inp):
            return {"messages": inp}, out
    return None


def sniff_pair(rec: Mapping[str, object]) -> bool:
    pair = _pair(rec)
    return pair is not None and (pair[1] is None or isinstance(pair[1], dict | str))


def parse_pair(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    pair = _pair(rec)
    if pair is None:
        raise BadRecord("missing-field", "expected a request object with messages, input or prompt, "
                        "and a response")
    req, resp = pair
    prompt = request_messages(req)
    model = _model((resp.get("model") if isinstance(resp, dict) else None), req.get("model"), common.model_of(rec))
    meta = common.scalar_metadata(rec, {*_REQUEST_KEYS, *_RESPONSE_KEYS, "input", "output"})
    answers = response_messages(resp, "response")
    err = resp.get("error") if isinstance(resp, dict) else None
    if not answers and isinstance(err, dict):  # the call failed: an error, not a prompt-only transcript
        raise common.FailedRequest(str(err.get("code") or err.get("type") or "error"),
                                   str(err.get("message", ""))[:300])
    return _conversations(prompt, answers, model, common.id_of(rec), meta)


def _model(*candidates: object) -> str | None:
    """The first model name given: the response's (the model that answered) before the request's."""
    return next((c for c in candidates if isinstance(c, str) and c), None)


def _conversations(prompt: list[Message], answers: list[list[Message]], model: str | None, rid: str | None,
                   meta: dict[str, object]) -> list[common.Conversation]:
    """One transcript per answer (``choice-N`` when there are several); a call with no answer
    logged (and no error) keeps its prompt, which still holds a user piece."""
    if not answers:
        return [common.Conversation(prompt, model=model, id=rid, metadata=meta)]
    many = len(answers) > 1
    return [common.Conversation(prompt + answer, model=model, id=rid, suffix=f"choice-{i}" if many else None,
                                metadata=meta) for i, answer in enumerate(answers)]


def request_messages(req: Mapping[str, object]) -> list[Message]:
    """The prompt of a Chat Completions, Messages, Responses or legacy Completions body."""
    if isinstance(req.get("messages"), list):
        if anthropic.sniff(req):
            return anthropic.parse(req, common.ParseContext())[0].messages
        return parse_messages(common.get_list(req, "messages", "request.messages"), "request.messages")
    if "input" in req or "instructions" in req:
        return responses.request_messages(req, "request")
    prompt = req.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return [make_message("user", [TextPart(common.get_str(prompt, "request.prompt"))])]


def response_messages(resp: object, where: str) -> list[list[Message]]:
    """One list of messages per alternative answer in a response body."""
    if resp is None:
        return []
    if isinstance(resp, str):
        return [[AssistantMessage((TextPart(resp),))]] if resp else []
    body = common.get_dict(resp, where)
    if isinstance(body.get("body"), dict):  # an OpenAI Batch output's response wrapper
        return response_messages(body["body"], f"{where}.body")
    if "choices" in body:
        out: list[list[Message]] = []
        for i, raw in enumerate(common.get_list(body, "choices", f"{where}.choices")):
            choice = common.get_dict(raw, f"{where}.choices[{i}]")
            message, text = choice.get("message"), choice.get("text")
            if isinstance(message, dict):
                msg = dict(message)
                msg.setdefault("role", "assistant")
                out.append(parse_messages([msg], f"{where}.choices[{i}].message"))
            elif isinstance(text, str):  # legacy Completions
                out.append([AssistantMessage((TextPart(text),))])
            else:
                raise BadRecord("missing-field", f"{where}.choices[{i}]: no message or text")
        return out
    if "output" in body and responses.is_items(body["output"]):
        return [responses.items_to_messages(body["output"], f"{where}.output")]
    if "role" in body and body.get("type") != "message":  # a bare chat message
        return [parse_messages([body], where)]
    if isinstance(body.get("content"), list | str) and body.get("role", "assistant") == "assistant":
        wrapped = {"messages": [{"role": "assistant", "content": body["content"]}]}  # Anthropic Messages
        return [anthropic.parse(wrapped, common.ParseContext())[0].messages]
    if "error" in body:
        return []
    raise BadRecord("wrong-type", f"{where}: not a Chat Completions, Messages or Responses body "
                    f"(keys: {', '.join(list(body)[:10])})")


PAIR = common.FormatSpec("api-log", "request/response logs ({request, response}: Chat Completions, "
                         "Messages or Responses bodies)", sniff_pair, parse_pair)


# ---------------------------------------------------------------- {messages, completion}


def _completion_key(rec: Mapping[str, object]) -> str | None:
    messages = rec.get("messages")
    if not (isinstance(messages, list) and messages and isinstance(messages[0], dict) and "role" in messages[0]):
        return None
    for key in _COMPLETION_KEYS:
        value = rec.get(key)
        if isinstance(value, str) or (isinstance(value, dict) and ("content" in value or "choices" in value)):
            return key
    return None


def sniff_completion(rec: Mapping[str, object]) -> bool:
    return _completion_key(rec) is not None


def parse_completion(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    key = _completion_key(rec)
    if key is None:
        raise BadRecord("missing-field", "expected messages and a completion")
    prompt = request_messages({"messages": rec["messages"], **({"system": rec["system"]}
                                                                if "system" in rec else {})})
    value = rec[key]
    answers: list[list[Message]]
    if isinstance(value, dict) and "choices" not in value and "role" not in value:
        answers = [[AssistantMessage(tuple(content_parts(value.get("content"), key, "assistant")))]]
    else:
        answers = response_messages(value, key)
    meta = common.scalar_metadata(rec, {"messages", "system", key})
    return _conversations(prompt, answers, common.model_of(rec), common.id_of(rec), meta)


COMPLETION = common.FormatSpec("messages-completion", "prompt messages with a completion beside them "
                               "({messages, completion})", sniff_completion, parse_completion)


# ---------------------------------------------------------------- OpenAI Batch


def sniff_batch_output(rec: Mapping[str, object]) -> bool:
    if not isinstance(rec.get("custom_id"), str):
        return False
    resp, result = rec.get("response"), rec.get("result")
    if isinstance(result, dict) and isinstance(result.get("type"), str):  # Anthropic Message Batches
        return True
    return "error" in rec and (resp is None or (isinstance(resp, dict) and "status_code" in resp))


def _batch_request(rec: Mapping[str, object]) -> Mapping[str, object] | None:
    """The request of a batch input line: OpenAI's ``body`` (with ``url``) or Anthropic's ``params``."""
    if not isinstance(rec.get("custom_id"), str):
        return None
    body, params = rec.get("body"), rec.get("params")
    if isinstance(body, dict) and "url" in rec:
        return body
    if isinstance(params, dict) and "messages" in params:
        return params
    return None


def sniff_batch_input(rec: Mapping[str, object]) -> bool:
    return _batch_request(rec) is not None


def parse_batch_output(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    """One answered batch request; a failed one (an ``error``, a non-200 status, an Anthropic
    result that did not succeed) is a :class:`common.FailedRequest` with its reason."""
    resp = rec.get("response")
    req = rec.get("request")  # joined from the input file by group_batch_output
    failure = _batch_failure(rec)
    if failure is not None:
        raise common.FailedRequest(*failure)
    prompt = request_messages(req) if isinstance(req, dict) else []
    cid = rec["custom_id"]
    meta: dict[str, object] = {"custom_id": cid}
    result = rec.get("result")
    if isinstance(result, dict):  # Anthropic: {type: succeeded, message}
        body = result.get("message") if isinstance(result.get("message"), dict) else None
        meta["result"] = result.get("type")
    else:
        body = resp.get("body") if isinstance(resp, dict) else None
        if isinstance(resp, dict):
            meta["status_code"] = resp.get("status_code")
    answers = response_messages(body, "response.body") if isinstance(body, dict) else []
    if not answers:
        raise common.FailedRequest("no-answer", f"{cid}: the response holds no answer")
    model = _model(body.get("model") if isinstance(body, dict) else None,
                   req.get("model") if isinstance(req, dict) else None)
    if not isinstance(req, dict):
        meta["request"] = "not found"
    return _conversations(prompt, answers, model, str(cid), meta)


def _batch_failure(rec: Mapping[str, object]) -> tuple[str, str] | None:
    """``(reason, message)`` of a batch output line whose request failed, or None."""
    cid = rec["custom_id"]
    result = rec.get("result")
    if isinstance(result, dict):  # Anthropic: succeeded | errored | canceled | expired
        kind = str(result.get("type"))
        if kind == "succeeded":
            return None
        err = result.get("error")
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            err = err["error"]
        if isinstance(err, dict):
            return str(err.get("type") or kind), f"{cid}: {kind}: {str(err.get('message', ''))[:300]}"
        return kind, f"{cid}: {kind}"
    err = rec.get("error")
    if isinstance(err, dict):
        return str(err.get("code") or "error"), f"{cid}: {str(err.get('message', ''))[:300]}"
    resp = rec.get("response")
    status = resp.get("status_code") if isinstance(resp, dict) else None
    if isinstance(status, int) and status != 200:
        body = resp.get("body") if isinstance(resp, dict) else None
        inner = body.get("error") if isinstance(body, dict) else None
        code = (inner.get("code") or inner.get("type")) if isinstance(inner, dict) else None
        message = inner.get("message", "") if isinstance(inner, dict) else ""
        return f"http-{status}" + (f" {code}" if code else ""), f"{cid}: HTTP {status}: {str(message)[:300]}"
    return None


def group_batch_output(path: Path, records: Iterator[RawRecord],
                       log: Callable[[str], None]) -> Iterator[RawRecord]:
    """Join each output line to its request in the batch input file(s) beside it."""
    requests = _batch_inputs(path, log)
    missing = 0
    for raw in records:
        cid = raw.data.get("custom_id") if raw.data is not None else None
        if raw.data is not None and isinstance(cid, str):
            req = requests.get(cid)
            if req is None:
                missing += 1
            else:
                raw = RawRecord(raw.where, {**raw.data, "request": req}, context=raw.context)
        yield raw
    if missing:
        log(f"{path}: {missing:,} batch outputs have no request in a batch input file beside them "
            "(their prompts are missing)")


def _batch_inputs(path: Path, log: Callable[[str], None]) -> dict[str, Mapping[str, object]]:
    """custom_id → request body, from every JSONL file in the folder that is a batch input."""
    out: dict[str, Mapping[str, object]] = {}
    for cand in sorted(path.parent.iterdir()):
        if cand == path or not cand.name.lower().endswith(JSONL_SUFFIXES):
            continue
        stream = iter_raw(cand)
        first = next((r for r in stream if r.data is not None), None)
        if first is None or first.data is None or not sniff_batch_input(first.data):
            stream.close()  # type: ignore[attr-defined]
            continue
        n = 0
        for raw in (first, *stream):
            request = _batch_request(raw.data) if raw.data is not None else None
            cid = raw.data.get("custom_id") if raw.data is not None else None
            if request is not None and isinstance(cid, str):  # a request has a string custom_id
                out[cid] = request
                n += 1
        log(f"{path}: joined with batch input {cand.name} ({n:,} requests)")
    if not out:
        log(f"{path}: no batch input file beside it; the transcripts will hold answers only")
    return out


def parse_batch_input(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    return []  # auxiliary: read by group_batch_output into the output's records


BATCH_OUTPUT = common.FormatSpec("openai-batch", "OpenAI Batch output (or Anthropic Message Batches results), "
                                 "joined by custom_id to the batch input file beside it", sniff_batch_output,
                                 parse_batch_output,
                                 group=group_batch_output)
BATCH_INPUT = common.FormatSpec("openai-batch-input", "OpenAI (or Anthropic) batch input: requests only, read "
                                "with its output file", sniff_batch_input, parse_batch_input, auxiliary=True)
