"""Transcripts → pieces: one per user turn, one per assistant turn's reasoning, one per
assistant turn's visible response. The autorater will see each piece alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from featdisco.errors import FeatdiscoError
from featdisco.storage.tables import TableWriter
from featdisco.transcripts import model as tm

TOOL_ARGS_MAX = 200
TOOL_OUTPUT_MAX = 2000  # characters of tool output kept beside a response for the report
BASE_COLUMNS = ("piece_id", "transcript_id", "turn", "kind", "text", "model", "source", "record",
                "format", "chars", "truncated", "redacted", "system", "metadata", "tool_output")
PIECE_SCHEMA = pa.schema([
    ("piece_id", pa.string()),
    ("transcript_id", pa.string()),
    ("turn", pa.int32()),
    ("kind", pa.string()),
    ("text", pa.large_string()),
    ("model", pa.string()),
    ("source", pa.string()),
    ("record", pa.string()),
    ("format", pa.string()),
    ("chars", pa.int64()),
    ("truncated", pa.bool_()),
    ("redacted", pa.int32()),
    ("system", pa.string()),
    ("metadata", pa.string()),
    # what the tools answered to a response's calls: shown in the report, never featurized
    ("tool_output", pa.large_string()),
])


@dataclass(slots=True)
class SplitStats:
    """Counts a user checks a split by: pieces per kind and model, and what was dropped."""

    transcripts: int = 0
    pieces: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, model)
    empty_dropped: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    redacted_blocks: int = 0
    redacted_only_turns: int = 0
    shared_pieces: int = 0  # turns of a conversation tree already split from another path

    def by_kind(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (kind, _model), n in self.pieces.items():
            out[kind] += n
        return dict(out)


def render_tool_call(part: tm.ToolCallPart) -> str:
    args = part.arguments if len(part.arguments) <= TOOL_ARGS_MAX else part.arguments[:TOOL_ARGS_MAX] + "…"
    return f"[tool call] {part.name}({args})"


def _visible(parts: Iterable[tm.Part], *, with_tools: bool) -> str:
    out: list[str] = []
    for p in parts:
        if isinstance(p, tm.TextPart):
            if p.text.strip():
                out.append(p.text)
        elif isinstance(p, tm.MediaPart):
            out.append(f"[{p.media}]")
        elif with_tools and isinstance(p, tm.ToolCallPart):
            out.append(render_tool_call(p))
    return "\n\n".join(out).strip()


def split_transcript(t: tm.Transcript, *, max_chars: int | None = None,
                     stats: SplitStats | None = None, seen: set[str] | None = None) -> list[tm.Piece]:
    """The pieces of one transcript; empty ones are dropped and counted in ``stats``.

    A path of a conversation tree (``t.tree``) names each piece by the tree and the content
    of every turn up to it; a piece whose id is in ``seen`` (split from an earlier path) is
    left out and counted, so a shared prompt is featurized once.
    """
    stats = stats if stats is not None else SplitStats()
    stats.transcripts += 1
    system = t.system
    pieces: list[tm.Piece] = []
    turn = -1
    # a running digest of a tree path's turns: equal prefixes give equal piece ids
    prefix = hashlib.sha1(f"{t.tree}\0{system or ''}".encode()) if t.tree is not None else None
    for index, msg in enumerate(t.messages):
        if isinstance(msg, tm.SystemMessage):
            continue
        turn += 1
        if prefix is not None:
            prefix.update(orjson.dumps([msg.role, [repr(p) for p in msg.content]]))
            node = prefix.hexdigest()[:16]
        candidates: list[tuple[tm.PieceKind, str, int]] = []
        if isinstance(msg, tm.UserMessage):
            candidates.append(("user", _visible(msg.content, with_tools=False), 0))
        elif isinstance(msg, tm.AssistantMessage):
            thoughts = [p.text.strip() for p in msg.content if isinstance(p, tm.ReasoningPart) and p.text.strip()]
            redacted = sum(1 for p in msg.content if isinstance(p, tm.RedactedReasoningPart))
            stats.redacted_blocks += redacted
            if redacted and not thoughts:
                stats.redacted_only_turns += 1
            if thoughts or redacted:
                candidates.append(("thought", "\n\n".join(thoughts), redacted))
            candidates.append(("response", _visible(msg.content, with_tools=True), 0))
        for kind, text, redacted in candidates:
            if not text:
                if not (kind == "thought" and redacted):
                    stats.empty_dropped[kind] += 1
                continue
            piece_id = f"{t.id}:{turn}:{kind}" if prefix is None else f"{t.tree}:{node}:{turn}:{kind}"
            if seen is not None and prefix is not None:
                if piece_id in seen:
                    stats.shared_pieces += 1
                    continue
                seen.add(piece_id)
            chars = len(text)
            truncated = max_chars is not None and chars > max_chars
            if truncated:
                assert max_chars is not None
                text = f"{text[:max_chars]}\n[… truncated {chars - max_chars} characters]"
                stats.truncated += 1
            stats.pieces[(kind, t.model or "")] += 1
            pieces.append(tm.Piece(
                piece_id=piece_id,
                transcript_id=t.id,
                turn=turn,
                kind=kind,
                text=text,
                model=t.model,
                source=t.source,
                record=t.record,
                format=t.format,
                chars=chars,
                truncated=truncated,
                redacted=redacted,
                system=system,
                metadata=t.metadata,
                tool_output=_tool_output(t.messages, index) if kind == "response" else None,
            ))
    return pieces


def _tool_output(messages: list[tm.Message], index: int) -> str | None:
    """The outputs of the tool turns right after an assistant step, clipped (idempotently,
    so a split read back and split again keeps them) to TOOL_OUTPUT_MAX characters."""
    texts: list[str] = []
    for msg in messages[index + 1:]:
        if not isinstance(msg, tm.ToolMessage):
            break
        texts.extend(p.content for p in msg.content if isinstance(p, tm.ToolResultPart) and p.content.strip())
        texts.extend(p.text for p in msg.content if isinstance(p, tm.TextPart) and p.text.strip())
    joined = "\n\n".join(texts)
    if not joined:
        return None
    return joined if len(joined) <= TOOL_OUTPUT_MAX else joined[:TOOL_OUTPUT_MAX] + "…"


def iter_pieces(transcripts: Iterable[tm.Transcript], *, max_chars: int | None = None,
                stats: SplitStats | None = None) -> Iterator[tm.Piece]:
    seen: set[str] = set()  # ids of conversation-tree pieces already emitted
    for t in transcripts:
        yield from split_transcript(t, max_chars=max_chars, stats=stats, seen=seen)


def _meta_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _batch(pieces: list[tm.Piece], meta_columns: list[str]) -> pa.RecordBatch:
    columns: dict[str, list[Any]] = {name: [] for name in BASE_COLUMNS}
    for name in meta_columns:
        columns[name] = []
    for p in pieces:
        for name in BASE_COLUMNS:  # each base column is the Piece field of the same name
            columns[name].append(getattr(p, name))
        columns["metadata"][-1] = orjson.dumps(p.metadata, default=str).decode()
        for name in meta_columns:
            columns[name].append(_meta_value(p.metadata.get(name)))
    return pa.RecordBatch.from_pydict(columns, schema=piece_schema(meta_columns))


def piece_schema(meta_columns: list[str] | None = None) -> pa.Schema:
    schema = PIECE_SCHEMA
    for name in meta_columns or []:
        if name in BASE_COLUMNS:
            continue
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def _chunks(pieces: Iterable[tm.Piece], size: int) -> Iterator[list[tm.Piece]]:
    chunk: list[tm.Piece] = []
    for p in pieces:
        chunk.append(p)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


BATCH_ROWS = 50_000  # pieces per record batch unless a caller asks otherwise


def piece_batches(pieces: Iterable[tm.Piece], meta_columns: list[str] | None = None,
                  batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """Pieces as Arrow record batches of ``batch_rows`` (default :data:`BATCH_ROWS`), so a
    caller can stream them to disk without holding the whole set."""
    cols = [c for c in meta_columns or [] if c not in BASE_COLUMNS]
    for chunk in _chunks(pieces, batch_rows or BATCH_ROWS):
        yield _batch(chunk, cols)


def pieces_to_table(pieces: Iterable[tm.Piece], meta_columns: list[str] | None = None) -> pa.Table:
    return pa.Table.from_batches(list(piece_batches(pieces, meta_columns)),
                                 schema=piece_schema(meta_columns))


def write_pieces(pieces: Iterable[tm.Piece], path: str | Path, *,
                 meta_columns: list[str] | None = None, batch_rows: int = 5000,
                 empty_error: Callable[[], str] | None = None) -> int:
    """Stream pieces into a Parquet file; written to a temporary name and renamed, so a
    crash never leaves a half-written file where a finished one is expected. With
    ``empty_error``, no pieces at all is a :class:`FeatdiscoError` with its message and
    nothing is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TableWriter(path, piece_schema(meta_columns))
    try:
        for batch in piece_batches(pieces, meta_columns, batch_rows):
            writer.write(batch)
        if empty_error is not None and writer.rows == 0:
            raise FeatdiscoError(f"no pieces written: {empty_error()}")
        writer.commit()
    finally:
        writer.abort()
    return writer.rows
