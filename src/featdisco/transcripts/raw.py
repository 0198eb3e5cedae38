"""A raw record: one record of an input file as a dict, or the reason it could not be read.

The lowest layer of reading: containers (:mod:`featdisco.transcripts.sources`,
:mod:`featdisco.transcripts.inspect_logs`) make raw records and formats parse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from featdisco.errors import BadRecord


@dataclass(slots=True)
class RawRecord:
    """One record, or the reason it could not be read.

    ``fatal`` marks a problem that ends the file (a truncated gzip, an unreadable
    Parquet footer): what was read before it stands.
    """

    where: str
    data: Mapping[str, object] | None
    error: BadRecord | None = None
    fatal: bool = False
    context: dict[str, str] | None = None  # what the container says of every record in it (a split)
    lost: int | None = None  # fatal only: about how many records the unread rest held


def decode_json_object(raw: bytes) -> dict[str, object]:
    """Parse one JSON object from bytes, with errors a user can act on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord("invalid-utf8", f"invalid UTF-8 at byte {e.start}") from None
    text = text.rstrip("\r\n")  # a cut-off record ends at its newline, not after it
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
        raise BadRecord("malformed-json", f"malformed JSON ({e.msg} at {where})") from None
    if not isinstance(value, dict):
        raise BadRecord("wrong-type", f"expected a JSON object, got {type_name(value)}")
    return value


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)
