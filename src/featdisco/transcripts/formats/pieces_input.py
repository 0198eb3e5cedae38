"""featdisco's own ``pieces.parquet`` as input: the pieces of a split, back into transcripts.

So a split made once (or edited, filtered, sampled with pandas) can be given to ``run`` or
``transform``. Rows of one transcript are together (the splitter writes them so); its
pieces become messages again at their turns, with empty tool turns filling the gaps that
tool output left, so splitting again gives the same turns, kinds and texts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from featdisco.errors import BadRecord
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats.common import Conversation, FormatSpec, ParseContext
from featdisco.transcripts.raw import RawRecord

_ROWS = "featdisco_pieces"
_COLUMNS = ("piece_id", "transcript_id", "turn", "kind", "text")


@dataclass(slots=True, frozen=True)
class _PieceRow:
    """A checked row of pieces.parquet: what rebuilding its turn needs."""

    kind: str
    text: str
    redacted: object  # a count, read only for thought pieces
    tool_output: str | None


def sniff(rec: Mapping[str, object]) -> bool:
    return all(c in rec for c in _COLUMNS) or isinstance(rec.get(_ROWS), list)


def group_pieces(path: Path, records: Iterator[RawRecord],
                 log: Callable[[str], None]) -> Iterator[RawRecord]:
    """Consecutive rows of one ``transcript_id`` become one record."""
    rows: list[Mapping[str, object]] = []
    first = last = ""
    for raw in records:
        if raw.data is None:
            yield raw
            continue
        if rows and raw.data.get("transcript_id") != rows[0].get("transcript_id"):
            yield RawRecord(first if first == last else f"{first} to {last}", {_ROWS: rows})
            rows = []
        if not rows:
            first = raw.where
        rows.append(raw.data)
        last = raw.where
    if rows:
        yield RawRecord(first if first == last else f"{first} to {last}", {_ROWS: rows})


def parse(rec: Mapping[str, object], ctx: ParseContext) -> list[Conversation]:
    rows = rec.get(_ROWS)
    if not isinstance(rows, list):
        rows = [rec]
    messages: list[tm.Message] = []
    system = rows[0].get("system")
    if isinstance(system, str) and system:
        messages.append(tm.SystemMessage((tm.TextPart(system),)))
    turns: dict[int, list[_PieceRow]] = {}
    for r in rows:
        turn, kind, text = r.get("turn"), r.get("kind"), r.get("text")
        if (not isinstance(turn, int) or not isinstance(kind, str) or kind not in ("user", "thought", "response")
                or not isinstance(text, str)):
            raise BadRecord("wrong-type", f"piece {r.get('piece_id')}: expected an integer turn, a kind "
                            "(user, thought, response) and a text")
        tool_output = r.get("tool_output")
        turns.setdefault(turn, []).append(_PieceRow(kind, text, r.get("redacted"),
                                                    tool_output if isinstance(tool_output, str) else None))
    pending_output: str | None = None  # the tool output shown beside the last response
    for turn in range(max(turns) + 1 if turns else 0):
        pieces = turns.get(turn)
        if not pieces:  # a tool turn (or a piece left out): keeps the numbering
            parts_ = (tm.ToolResultPart(pending_output),) if pending_output else ()
            messages.append(tm.ToolMessage(parts_))
            pending_output = None
            continue
        pending_output = next((p.tool_output for p in pieces if p.kind == "response"
                               and p.tool_output is not None), None)
        if pieces[0].kind == "user":
            messages.append(tm.UserMessage((tm.TextPart(pieces[0].text),)))
            continue
        parts: list[tm.Part] = []
        for p in pieces:
            if p.kind == "thought":
                parts.append(tm.ReasoningPart(p.text))
                parts.extend(tm.RedactedReasoningPart() for _ in range(_count(p.redacted)))
            else:
                parts.append(tm.TextPart(p.text))
        messages.append(tm.AssistantMessage(tuple(parts)))
    first = rows[0]
    meta: dict[str, object] = {}
    raw_meta = first.get("metadata")
    if isinstance(raw_meta, str) and raw_meta:
        try:
            loaded = orjson.loads(raw_meta)
        except orjson.JSONDecodeError:
            raise BadRecord("malformed-json", f"piece {first.get('piece_id')}: metadata is not JSON") from None
        if isinstance(loaded, dict):
            meta.update(loaded)
    if first.get("source"):
        meta.setdefault("origin", f"{first['source']}, {first.get('record') or ''}".rstrip(", "))
    model = first.get("model")
    return [Conversation(messages, model=model if isinstance(model, str) else None,
                         id=str(first["transcript_id"]), metadata=meta)]


def _count(value: object) -> int:
    """A row's ``redacted`` count as the splitter wrote it (missing or null: none)."""
    if not value:
        return 0
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"redacted: expected a number, got {type(value).__name__}")


SPEC = FormatSpec("featdisco-pieces", "featdisco's own pieces.parquet (a split given to run or "
                  "transform)", sniff, parse, group=group_pieces)
