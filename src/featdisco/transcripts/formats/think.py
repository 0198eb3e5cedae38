"""``<think>`` reasoning inside assistant text: taken only where models put it.

Models emit a reasoning block at the very start of their output (``<think>…</think>``, or
cut off by a token limit), or, when the prompt template already opened the block
(DeepSeek-R1 style), a lone ``</think>`` on its own line ending the reasoning. Anywhere else
the tags are something the answer *talks about* (a regex in a code block, a sentence about
R1), so they stay response text: tags inside code spans or fences are plain text, and tags
outside code that are not in one of those places are kept and counted as ambiguous rather
than guessed at.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from featdisco.transcripts.model import AssistantMessage, Message, Part, ReasoningPart, TextPart

_TAG = re.compile(r"<(/?)(think|thinking)>", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})", re.MULTILINE)
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def code_spans(text: str) -> list[tuple[int, int]]:
    """Sorted ``(start, end)`` of fenced code blocks and inline code spans (Markdown)."""
    fences: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _FENCE.search(text, pos)
        if not m:
            break
        run = m.group(1)
        close = re.compile(rf"^[ \t]{{0,3}}{re.escape(run[0])}{{{len(run)},}}[ \t]*$", re.MULTILINE)
        line_end = text.find("\n", m.end())
        c = close.search(text, line_end + 1) if line_end != -1 else None
        end = c.end() if c else len(text)  # an unclosed fence runs to the end
        fences.append((m.start(), end))
        pos = end
    spans = list(fences)
    last = 0
    for start, end in [*fences, (len(text), len(text))]:
        spans.extend((last + m.start(), last + m.end()) for m in _INLINE.finditer(text[last:start]))
        last = end
    return sorted(spans)


class _Tags:
    """The reasoning tags of a text that stand outside code."""

    def __init__(self, text: str) -> None:
        spans = code_spans(text) if "`" in text or "~~~" in text else []
        starts = [s for s, _ in spans]

        def in_code(i: int) -> bool:
            k = bisect_right(starts, i) - 1
            return k >= 0 and spans[k][0] <= i < spans[k][1]

        self.tags = [m for m in _TAG.finditer(text) if not in_code(m.start())]

    def after(self, pos: int, closing: bool) -> re.Match[str] | None:
        for m in self.tags:
            if m.start() >= pos and bool(m.group(1)) == closing:
                return m
        return None


def split_think(text: str) -> tuple[list[str], str, bool]:
    """``(reasoning blocks, visible text, ambiguous)`` for one assistant text.

    ``ambiguous`` is true when tags outside code were left in the text because they were
    not where a model puts reasoning.
    """
    if "<" not in text or not _TAG.search(text):
        return [], text, False
    tags = _Tags(text)
    if not tags.tags:
        return [], text, False
    reasoning: list[str] = []
    pos = len(text) - len(text.lstrip())
    # One or more blocks at the very start; an unclosed one was cut off and is all reasoning.
    while (m := tags.after(pos, closing=False)) is not None and m.start() == pos:
        close = tags.after(m.end(), closing=True)
        if close is None:
            reasoning.append(text[m.end():])
            pos = len(text)
            break
        reasoning.append(text[m.end():close.start()])
        pos = close.end()
        pos += len(text[pos:]) - len(text[pos:].lstrip())
    if not reasoning:
        closes = [t for t in tags.tags if t.group(1)]
        if len(closes) == len(tags.tags) == 1 and _on_own_line(text, closes[0]):
            reasoning.append(text[:closes[0].start()])  # opened by the prompt template
            pos = closes[0].end()
    ambiguous = any(t.start() >= pos for t in tags.tags)
    kept = [r.strip() for r in reasoning if r.strip()]
    if not reasoning:
        return [], text, ambiguous
    return kept, text[pos:].strip(), ambiguous


def _on_own_line(text: str, m: re.Match[str]) -> bool:
    before = text[:m.start()].rstrip(" \t")
    after = text[m.end():].lstrip(" \t")
    return before == "" or before.endswith("\n") or after == "" or after.startswith("\n")


def extract_think(messages: list[Message]) -> tuple[list[Message], int]:
    """Apply :func:`split_think` to the start of every assistant message's text, whatever
    its format; returns the messages and how many were ambiguous."""
    out: list[Message] = []
    ambiguous = 0
    for msg in messages:
        if not isinstance(msg, AssistantMessage) or not any(
            isinstance(p, TextPart) and "<" in p.text for p in msg.content
        ):
            out.append(msg)
            continue
        parts: list[Part] = []
        first_text = True
        for p in msg.content:
            if isinstance(p, TextPart) and first_text:
                first_text = False
                thoughts, visible, unsure = split_think(p.text)
                ambiguous += unsure
                parts.extend(ReasoningPart(t) for t in thoughts)
                if visible:
                    parts.append(TextPart(visible))
            elif isinstance(p, TextPart):
                ambiguous += "<" in p.text and bool(_Tags(p.text).tags)  # not the start: never reasoning
                parts.append(p)
            else:
                parts.append(p)
        out.append(AssistantMessage(tuple(parts)))
    return out, ambiguous
