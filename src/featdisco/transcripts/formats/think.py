"""``<think>`` reasoning inside assistant text, read as the reasoning servers read it.

The reasoning parsers of vLLM (``deepseek_r1``) and SGLang (``DeepSeekR1Detector``,
``Qwen3Detector``) agree on the convention followed here:

* a text that opens with ``<think>`` (after optional whitespace) is reasoning up to the
  *first* ``</think>``, wherever that stands (mid-line, inside a code fence the reasoning
  never closed); with no ``</think>`` at all the generation was cut off and is all reasoning;
* a text with ``</think>`` and no ``<think>`` before it is what a chat template that
  pre-fills ``<think>`` (DeepSeek-R1's) leaves: everything before the first ``</think>`` is
  reasoning.

The second rule is only right for models that reason in tags: a model that does not (gpt-4o
replying "Sure.\\n\\n</think>\\n\\nDone.") has no reasoning there. So it is decided by what is
known of the model (:func:`reasons_in_tags`): applied for tag-reasoning models (and for
messages that carry a reasoning field, whose stack is a reasoning one), refused for models
known to keep their reasoning out of the text (kept as response and counted as a stray
tag), and for an unknown model applied only where the tag stands alone on its own line,
outside code, as a template-closed block does. Unlike the servers, which also open at a
``<think>`` anywhere, a tag that is not at the start is something the answer *talks about*
("`<think>` tags are how…"): it stays response text, counted as ambiguous when it stands
outside code. Each reasoning text is kept once per message: a ``reasoning_content`` that
repeats the ``<think>`` block of the content is not doubled.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

from featdisco.transcripts.model import AssistantMessage, Message, Part, ReasoningPart, TextPart

_TAG = re.compile(r"<(/?)(think|thinking)>", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})", re.MULTILINE)
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)

# Hosted families that never write reasoning into their text (none, or a field of its own),
# whatever their names say ("claude-3-7-sonnet-thinking", "gemini-2.0-flash-thinking").
_HOSTED_TAGLESS = re.compile(
    r"(?<![a-z0-9])(?:gpt-|chatgpt|o[134](?:-|$)|text-davinci|claude|gemini|palm|bard|command|grok-)",
    re.IGNORECASE)
# Models whose reasoning arrives inside the text between think tags (R1 and its distills,
# QwQ, Qwen3, and the open reasoning models trained on their format).
_TAG_REASONERS = re.compile(
    r"(?<![a-z0-9])(?:r1|qwq|qwen3|reasoner|thinking|think|thinker|openthinker|sky-t1|s1(?:\.1)?"
    r"|exaone-deep|phi-4(?:-mini)?-(?:flash-)?reasoning|magistral|glm-z1|glm-4\.[5-9]|minimax-m[12]"
    r"|seed-oss|hermes-4|k2-think)(?![a-z0-9])",
    re.IGNORECASE)
# Open families that do not reason in tags (a distill named after its base, such as
# DeepSeek-R1-Distill-Llama, is caught by the reasoners above first).
_OPEN_TAGLESS = re.compile(
    r"(?<![a-z0-9])(?:gemma|mistral|mixtral|llama|vicuna|wizardlm|alpaca|phi-[23]|qwen-|qwen2|yi-|falcon"
    r"|olmo-2)",
    re.IGNORECASE)
_TOOL_CALL = "<tool_call>"  # Qwen3 may open a tool call without closing its reasoning


def reasons_in_tags(model: str | None) -> bool | None:
    """Whether ``model`` writes its reasoning between think tags: True for R1-style
    reasoning models, False for families known not to, None when nothing is known."""
    if not model:
        return None
    name = model.rsplit("/", 1)[-1]
    if _HOSTED_TAGLESS.search(name):
        return False
    if _TAG_REASONERS.search(name):
        return True
    if _OPEN_TAGLESS.search(name):
        return False
    return None


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


def _tags_outside_code(text: str) -> list[re.Match[str]]:
    """The think tags of ``text`` that stand outside Markdown code."""
    tags = list(_TAG.finditer(text))
    if not tags or ("`" not in text and "~~~" not in text):
        return tags
    spans = code_spans(text)
    starts = [s for s, _ in spans]

    def in_code(i: int) -> bool:
        k = bisect_right(starts, i) - 1
        return k >= 0 and spans[k][0] <= i < spans[k][1]

    return [m for m in tags if not in_code(m.start())]


@dataclass(slots=True)
class ThinkSplit:
    """One assistant text read for reasoning.

    ``close_only`` says what became of a ``</think>`` with no ``<think>`` before it:
    ``"split"`` (reasoning closed by the template's block), ``"kept"`` (a stray tag left in
    the response), or None when the text has no such tag.
    """

    thoughts: list[str]
    visible: str
    ambiguous: bool = False
    close_only: str | None = None


def split_think(text: str, reasoner: bool | None = None) -> ThinkSplit:
    """Reasoning blocks and visible text of one assistant text; ``reasoner`` is what is
    known of the model (:func:`reasons_in_tags`)."""
    first = _TAG.search(text) if "<" in text else None
    if first is None:
        return ThinkSplit([], text)
    lead = len(text) - len(text.lstrip())
    if not first.group(1) and first.start() == lead:
        return _leading_blocks(text, lead)
    if first.group(1):  # a closing tag before any opening one
        return _close_only(text, first, reasoner)
    return ThinkSplit([], text, ambiguous=bool(_tags_outside_code(text)))


def _leading_blocks(text: str, pos: int) -> ThinkSplit:
    """Blocks at the very start, each ended by the first closing tag of its name after it."""
    thoughts: list[str] = []
    while (m := _TAG.match(text, pos)) is not None and not m.group(1):
        name = m.group(2).lower()
        start = m.end()
        while (again := _TAG.match(text, start)) is not None and not again.group(1):
            start = again.end()  # a repeated opening tag (SGLang strips these too)
        close = next((c for c in _TAG.finditer(text, start) if c.group(1) and c.group(2).lower() == name), None)
        if close is None:
            call = text.find(_TOOL_CALL, start)
            if call >= 0:  # a tool call ends the reasoning (SGLang's Qwen3 rule); it is response
                thoughts.append(text[start:call])
                pos = call
            else:  # cut off before it closed: all reasoning
                thoughts.append(text[start:])
                pos = len(text)
            break
        thoughts.append(text[start:close.start()])
        pos = close.end()
        pos += len(text[pos:]) - len(text[pos:].lstrip())
    visible = text[pos:].strip()
    kept = [t.strip() for t in thoughts if t.strip()]
    return ThinkSplit(kept, visible, ambiguous=bool(visible and _tags_outside_code(visible)))


def _close_only(text: str, close: re.Match[str], reasoner: bool | None) -> ThinkSplit:
    """A closing tag with no opening one before it: the end of a template-opened block, or
    a stray tag, by what is known of the model."""
    if not reasoner:
        outside = _tags_outside_code(text)
        if not outside:  # shown in code: an answer about the tags
            return ThinkSplit([], text)
        if reasoner is False:
            return ThinkSplit([], text, close_only="kept")
        if not (len(outside) == 1 and outside[0].start() == close.start() and _on_own_line(text, close)):
            return ThinkSplit([], text, ambiguous=True)
    thought = text[:close.start()].strip()
    visible = text[close.end():].strip()
    return ThinkSplit([thought] if thought else [], visible, close_only="split",
                      ambiguous=bool(visible and _tags_outside_code(visible)))


def _on_own_line(text: str, m: re.Match[str]) -> bool:
    before = text[:m.start()].rstrip(" \t")
    after = text[m.end():].lstrip(" \t")
    return before == "" or before.endswith("\n") or after == "" or after.startswith("\n")


@dataclass(slots=True)
class ThinkCounts:
    """What reading the tags decided, for the split's notes: nothing is guessed silently."""

    ambiguous: int = 0  # texts whose tags were left in the response (mentions, not reasoning)
    template_closed: int = 0  # a </think> without <think> taken as the end of reasoning
    stray_close: Counter[str] = field(default_factory=Counter)  # model -> </think> kept as response
    duplicates: int = 0  # reasoning texts given twice (a field and the tags) and kept once

    def add(self, other: ThinkCounts) -> None:
        self.ambiguous += other.ambiguous
        self.template_closed += other.template_closed
        self.stray_close.update(other.stray_close)
        self.duplicates += other.duplicates


def _key(text: str) -> str:
    return " ".join(text.split())


def extract_think(messages: list[Message], model: str | None = None, *,
                  reasoner: bool | None = None) -> tuple[list[Message], ThinkCounts]:
    """Apply :func:`split_think` to the first text of every assistant message, whatever its
    format, and keep each reasoning text once per message. ``reasoner`` overrides what the
    ``model`` name says (a column mapped as both thought and response declares reasoning)."""
    counts = ThinkCounts()
    known = reasoner if reasoner is not None else reasons_in_tags(model)
    out: list[Message] = []
    for msg in messages:
        if not isinstance(msg, AssistantMessage) or not any(
            isinstance(p, TextPart) and "<" in p.text for p in msg.content
        ):
            out.append(msg)
            continue
        has_field = any(isinstance(p, ReasoningPart) for p in msg.content)
        parts: list[Part] = []
        first_text = True
        for p in msg.content:
            if isinstance(p, TextPart) and first_text:
                first_text = False
                got = split_think(p.text, True if has_field and known is not False else known)
                counts.ambiguous += got.ambiguous
                if got.close_only == "split":
                    counts.template_closed += 1
                elif got.close_only == "kept":
                    counts.stray_close[model or "(unknown model)"] += 1
                parts.extend(ReasoningPart(t) for t in got.thoughts)
                if got.visible:
                    parts.append(TextPart(got.visible))
            elif isinstance(p, TextPart):
                counts.ambiguous += "<" in p.text and bool(_tags_outside_code(p.text))  # never reasoning here
                parts.append(p)
            else:
                parts.append(p)
        seen: set[str] = set()
        once: list[Part] = []
        for p in parts:
            if isinstance(p, ReasoningPart):
                key = _key(p.text)
                if key in seen:
                    counts.duplicates += 1
                    continue
                seen.add(key)
            once.append(p)
        out.append(AssistantMessage(tuple(once)))
    return out, counts
