"""Transcripts in: readers for every common format, the typed model, and the splitter."""

from featdisco.transcripts.model import (
    AssistantMessage,
    MediaPart,
    Message,
    Part,
    Piece,
    PieceKind,
    ReasoningPart,
    RedactedReasoningPart,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolMessage,
    ToolResultPart,
    Transcript,
    UserMessage,
)
from featdisco.transcripts.read import FileReport, ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import (
    SplitStats,
    iter_pieces,
    pieces_to_table,
    split_transcript,
    write_pieces,
)

__all__ = [
    "AssistantMessage",
    "FileReport",
    "MediaPart",
    "Message",
    "Part",
    "Piece",
    "PieceKind",
    "ReadOptions",
    "ReadReport",
    "ReasoningPart",
    "RedactedReasoningPart",
    "SplitStats",
    "SystemMessage",
    "TextPart",
    "ToolCallPart",
    "ToolMessage",
    "ToolResultPart",
    "Transcript",
    "UserMessage",
    "iter_pieces",
    "pieces_to_table",
    "read_transcripts",
    "split_transcript",
    "write_pieces",
]
