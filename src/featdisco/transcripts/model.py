"""The typed transcript model every reader produces and the splitter consumes.

Readers normalise a dozen vendor formats into these few types so that nothing downstream
needs to know where a transcript came from. These are stored records: nothing here is
filled in by an LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

# ---------------------------------------------------------------- content parts


@dataclass(slots=True, frozen=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True, frozen=True)
class ReasoningPart:
    """Visible reasoning ("thinking", "reasoning_content", a ``<think>`` block, ...)."""

    text: str
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True, frozen=True)
class RedactedReasoningPart:
    """Reasoning the provider hid; kept so it can be counted, never turned into text."""

    type: Literal["redacted_reasoning"] = "redacted_reasoning"


@dataclass(slots=True, frozen=True)
class ToolCallPart:
    name: str
    arguments: str  # JSON text (or the raw string the model produced)
    id: str | None = None
    type: Literal["tool_call"] = "tool_call"


@dataclass(slots=True, frozen=True)
class ToolResultPart:
    content: str
    tool_call_id: str | None = None
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"


@dataclass(slots=True, frozen=True)
class MediaPart:
    """An image, audio or file attachment: only its kind is kept."""

    media: str
    type: Literal["media"] = "media"


Part = TextPart | ReasoningPart | RedactedReasoningPart | ToolCallPart | ToolResultPart | MediaPart

# ---------------------------------------------------------------- messages


@dataclass(slots=True, frozen=True)
class _Turn:
    """What every message holds: its parts, in order. Each role is its own class (below), so
    readers and the splitter tell messages apart with isinstance."""

    content: tuple[Part, ...]


@dataclass(slots=True, frozen=True)
class SystemMessage(_Turn):
    role: Literal["system"] = "system"


@dataclass(slots=True, frozen=True)
class UserMessage(_Turn):
    role: Literal["user"] = "user"


@dataclass(slots=True, frozen=True)
class AssistantMessage(_Turn):
    role: Literal["assistant"] = "assistant"


@dataclass(slots=True, frozen=True)
class ToolMessage(_Turn):
    tool_call_id: str | None = None
    name: str | None = None
    role: Literal["tool"] = "tool"


Message = SystemMessage | UserMessage | AssistantMessage | ToolMessage
Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


def make_message(role: Role, parts: Sequence[Part], *, tool_call_id: str | None = None,
                 name: str | None = None) -> Message:
    content = tuple(parts)
    if role == "user":
        return UserMessage(content)
    if role == "assistant":
        return AssistantMessage(content)
    if role == "system":
        return SystemMessage(content)
    return ToolMessage(content, tool_call_id=tool_call_id, name=name)


# ---------------------------------------------------------------- transcript


@dataclass(slots=True)
class Transcript:
    """One conversation, with where it came from.

    ``source`` and ``record`` locate it in the input (file path, and line / row / sample
    id), so any piece can be traced back to the exact record that produced it. ``tree``
    is set on one root-to-leaf path of a conversation tree: its pieces are then named by
    their content and position, so the turns several paths share become one piece each.
    """

    id: str
    messages: list[Message]
    model: str | None = None
    source: str = ""
    record: str = ""
    format: str = ""
    metadata: dict[str, object] = field(default_factory=dict)  # record fields carried along (JSON values)
    tree: str | None = None

    @property
    def system(self) -> str | None:
        texts = [text_of(m) for m in self.messages if isinstance(m, SystemMessage)]
        joined = "\n\n".join(t for t in texts if t)
        return joined or None


def text_of(message: Message) -> str:
    """The visible text of a message (text parts only), joined in order."""
    return "\n\n".join(p.text for p in message.content if isinstance(p, TextPart) and p.text)


# ---------------------------------------------------------------- pieces

PieceKind = Literal["user", "thought", "response"]
PIECE_KINDS: tuple[PieceKind, ...] = get_args(PieceKind)


@dataclass(slots=True, frozen=True)
class Piece:
    """The unit the autorater sees: one user turn, one turn's reasoning, or one response."""

    piece_id: str
    transcript_id: str
    turn: int
    kind: PieceKind
    text: str
    model: str | None
    source: str
    record: str
    format: str
    chars: int  # length before any truncation
    truncated: bool
    redacted: int  # redacted reasoning blocks in this turn (thought pieces only)
    system: str | None
    metadata: dict[str, object]  # the transcript's, shared: written out as a JSON column
    tool_output: str | None = None  # what the tools answered to this response's calls (report only)
