"""What every format parser shares: its output type and field checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from featdisco.errors import BadRecord
from featdisco.transcripts.model import Message, Role
from featdisco.transcripts.raw import RawRecord, type_name

MODEL_KEYS = ("model", "model_id", "generator", "model_name", "policy_model")
ID_KEYS = ("id", "conversation_id", "answer_id", "ans_id", "sample_id", "trajectory_id", "uid")
_META_STR_MAX = 500


class FailedRequest(Exception):
    """A logged API call that errored: no answer to read, so no transcript. The reader
    counts it by ``reason`` (the provider's error code) and never makes a user-only
    transcript of its prompt."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class Conversation:
    """A parser's output: messages plus what the record says about them.

    ``id`` is the record's own id if it has one; ``suffix`` tells apart several
    conversations in one record (HH-RLHF's chosen and rejected). ``tree`` names the
    message tree a path was taken from, so turns the paths share are split once.
    """

    messages: list[Message]
    model: str | None = None
    id: str | None = None
    suffix: str | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    tree: str | None = None


@dataclass(slots=True)
class ParseContext:
    """What a parser may need beyond the record: column mapping, joined side files."""

    mapping: dict[str, str] = field(default_factory=dict)
    questions: dict[str, Mapping[str, object]] = field(default_factory=dict)  # question id -> its raw record
    questions_source: str | None = None
    tree: str = "all"  # conversation trees: every root-to-leaf path, or the "first" (top-ranked)


@dataclass(slots=True, frozen=True)
class FormatSpec:
    name: str
    description: str
    sniff: Callable[[Mapping[str, object]], bool]
    parse: Callable[[Mapping[str, object], ParseContext], list[Conversation]]
    auxiliary: bool = False  # a side file joined into others (MT-bench questions), not transcripts
    # Formats whose transcript spans several raw records (a Claude Code session is a file of
    # events) or several files (an OpenAI Batch output joined to its input) regroup the file's
    # raw records here before parsing; bad records pass through untouched to be reported.
    group: Callable[[Path, Iterator[RawRecord], Callable[[str], None]], Iterator[RawRecord]] | None = None
    # A file of this format may rightly hold no conversation (Claude Code leaves session files
    # of summary lines only): it is listed as a skipped file with the reason, not an error.
    empty_ok: str | None = None


# ---------------------------------------------------------------- field access


def group_file(records: Iterator[RawRecord], key: str, where: Callable[[str, str], str],
               pass_through: Callable[[Mapping[str, object]], bool] = lambda data: False) -> Iterator[RawRecord]:
    """A file's records as one record ``{key: [their data]}`` (a session or trajectory written
    one event a line) placed at ``where(first, last)``; unreadable records, and those
    ``pass_through`` accepts, go on untouched before it."""
    events: list[Mapping[str, object]] = []
    first = last = ""
    for raw in records:
        if raw.data is None or pass_through(raw.data):
            yield raw
            continue
        events.append(raw.data)
        first = first or raw.where
        last = raw.where
    if events:
        yield RawRecord(where(first, last), {key: events})


def list_key(rec: Mapping[str, object], keys: tuple[str, ...], marker: str) -> str | None:
    """The first of ``keys`` holding a non-empty array of objects whose first has ``marker``
    (``role`` for chat messages, ``from`` for ShareGPT turns)."""
    for key in keys:
        value = rec.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict) and marker in value[0]:
            return key
    return None


def get_list(rec: Mapping[str, object], key: str, where: str | None = None) -> list[object]:
    value = rec.get(key)
    if isinstance(value, str) and value[:1] == "[":  # a JSON-encoded column
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadRecord("malformed-json", f"{where or key}: not valid JSON") from None
    if not isinstance(value, list):
        raise BadRecord("wrong-type", f"{where or key}: expected an array, got {type_name(value)}")
    return value


def get_dict(value: object, where: str) -> Mapping[str, object]:
    """A raw value that must be a JSON object; its fields stay unchecked (``object``) until
    the caller narrows the ones it reads."""
    if not isinstance(value, dict):
        raise BadRecord("wrong-type", f"{where}: expected an object, got {type_name(value)}")
    return value


def opt_str(value: object) -> str | None:
    """A raw field that counts only when it is a string (an id, a name): anything else is None."""
    return value if isinstance(value, str) else None


def iter_field(value: object) -> Iterable[object]:
    """``value or []`` for a raw field read as an array: a missing or empty one gives nothing;
    one that is not iterable raises TypeError, which the reader reports as a wrong-type record."""
    if not value:
        return ()
    if isinstance(value, Iterable):
        return value
    raise TypeError(f"'{type(value).__name__}' object is not iterable")


def get_str(value: object, where: str, *, allow_none: bool = True) -> str:
    if value is None and allow_none:
        return ""
    if isinstance(value, str):
        return value
    raise BadRecord("wrong-type", f"{where}: expected a string, got {type_name(value)}")


def get_role(value: object, where: str, roles: Mapping[str, Role], known: str, *,
             fold: bool = True) -> tuple[str, Role]:
    """A message's role field as written and as mapped through ``roles`` (lower-cased first
    when ``fold``); ``known`` ends the error a user sees ("one of user, assistant")."""
    if not isinstance(value, str):
        raise BadRecord("wrong-type", f"{where}: expected a string, got {type_name(value)}")
    role = roles.get(value.lower() if fold else value)
    if role is None:
        raise BadRecord("unknown-role", f"{where} {value!r} is not {known}")
    return value, role


def dotted(rec: Mapping[str, object], path: str) -> object:
    """The value at a dotted path (``request.model``, ``info.exit_status``), or None."""
    value: object = rec
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, dict) and isinstance(value.get("sample"), dict) and part in value["sample"]:
            value = value["sample"][part]  # Inspect records wrap the sample
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def compact_json(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def model_of(rec: Mapping[str, object]) -> str | None:
    for key in MODEL_KEYS:
        value = rec.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def id_of(rec: Mapping[str, object], keys: tuple[str, ...] = ID_KEYS) -> str | None:
    for key in keys:
        value = rec.get(key)
        if (isinstance(value, str) and value) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
    return None


def scalar_metadata(rec: Mapping[str, object], exclude: set[str] | frozenset[str]) -> dict[str, object]:
    """Top-level scalar fields not consumed by the parser (dataset, split, checkpoint, ...)."""
    out: dict[str, object] = {}
    for key, value in rec.items():
        if key in exclude or key in MODEL_KEYS:
            continue
        if isinstance(value, str):
            out[key] = value if len(value) <= _META_STR_MAX else value[:_META_STR_MAX] + "…"
        elif isinstance(value, bool | int | float) or value is None:
            if value is not None:
                out[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 50:
            out[key] = value  # tags
    return out
