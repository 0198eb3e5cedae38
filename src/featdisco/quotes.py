"""Checking an autorater's quote against the piece it claims to quote.

A quote is evidence only if it is in the text as words: found on word boundaries (so "cat"
does not verify against "concatenation") and holding at least one word of three letters or
more (so ".", "e" or "of" prove nothing). Models re-space, re-case and re-punctuate what they
quote, so the match ignores differences of whitespace and case, typographic quote marks,
and quotation marks or ellipses wrapped around the whole quote; nothing else. A verified
quote gets its character span in the original text (what a reader highlights); one that
fails is flagged unverified with its reason (``not_found``, ``too_short``, ``inside_word``),
never shown as evidence. The share of unverified quotes in a run measures how often the
autorater invents its evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# Typographic marks folded to their plain form on both sides of the match.
_FOLD = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "„": '"', "′": "'", "–": "-", "—": "-"})
_WRAP = "\"'“”‘’«»`"
_ELLIPSES = ("...", "…")
_WORD = re.compile(r"[^\W\d_]{3,}")  # a word of three letters or more, in any script
MIN_WORD_LETTERS = 3

Failure = Literal["not_found", "too_short", "inside_word"]
FAILURES: tuple[Failure, ...] = ("not_found", "too_short", "inside_word")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class QuoteCheck:
    """A quote's verdict: its span when verified, else why it failed."""

    span: Span | None
    failure: Failure | None

    @property
    def verified(self) -> bool:
        return self.failure is None


def _unspaced(ch: str) -> bool:
    """Scripts written without spaces between words (CJK, Thai): any character edge is a
    word edge there."""
    code = ord(ch)
    return code >= 0x2E80 or 0x0E00 <= code <= 0x0EFF


def _joined(a: str, b: str) -> bool:
    """Whether two adjacent characters belong to one word."""
    return a.isalnum() and b.isalnum() and not (_unspaced(a) or _unspaced(b))


def _bounded(hay: str, start: int, end: int) -> bool:
    """Whether ``hay[start:end]`` starts and ends on word edges."""
    if start > 0 and _joined(hay[start - 1], hay[start]):
        return False
    return not (end < len(hay) and _joined(hay[end - 1], hay[end]))


def _find_bounded(hay: str, needle: str) -> tuple[int | None, bool]:
    """The first word-bounded occurrence of ``needle`` in ``hay`` and whether it occurs at all."""
    at = hay.find(needle)
    seen = at >= 0
    while at >= 0:
        if _bounded(hay, at, at + len(needle)):
            return at, True
        at = hay.find(needle, at + 1)
    return None, seen


class QuoteIndex:
    """A piece prepared for many quote look-ups (one per feature): its normalised form and,
    for each normalised character, the original index it came from."""

    __slots__ = ("_norm", "_origin", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._norm: str | None = None  # built on the first quote not copied exactly
        self._origin: list[int] = []

    def _build(self) -> str:
        chars: list[str] = []
        origin: list[int] = []
        space = True  # collapse leading whitespace too
        for i, ch in enumerate(self.text):
            if ch.isspace():
                if not space:
                    chars.append(" ")
                    origin.append(i)
                space = True
                continue
            space = False
            for c in ch.translate(_FOLD).lower():  # lower() may give two characters
                chars.append(c)
                origin.append(i)
        self._norm = "".join(chars)
        self._origin = origin
        return self._norm

    def find(self, quote: str) -> Span | None:
        """The span of ``quote`` in the original text when it verifies, else None."""
        return self.check(quote).span

    def check(self, quote: str) -> QuoteCheck:
        """Whether ``quote`` is evidence from this text: its span, or why it is not."""
        needle = normalise(quote)
        if not _WORD.search(needle):
            return QuoteCheck(None, "too_short")
        exact = quote.strip()
        at, seen = _find_bounded(self.text, exact) if exact else (None, False)
        if at is not None:  # most quotes are copied exactly
            return QuoteCheck(Span(at, at + len(exact)), None)
        norm = self._norm if self._norm is not None else self._build()
        at, seen_norm = _find_bounded(norm, needle)
        if at is None:
            return QuoteCheck(None, "inside_word" if seen or seen_norm else "not_found")
        return QuoteCheck(Span(self._origin[at], self._origin[at + len(needle) - 1] + 1), None)


def normalise(quote: str) -> str:
    """``quote`` as matched: folded, lower-cased, single-spaced, without wrapping marks."""
    q = " ".join(quote.translate(_FOLD).lower().split())
    changed = True
    while changed and q:
        changed = False
        for e in _ELLIPSES:
            if q.startswith(e):
                q, changed = q[len(e):].lstrip(), True
            if q.endswith(e):
                q, changed = q[: -len(e)].rstrip(), True
        if len(q) >= 2 and q[0] in _WRAP and q[-1] in _WRAP:
            q, changed = q[1:-1].strip(), True
    return q


def locate(quote: str, text: str) -> Span | None:
    """:meth:`QuoteIndex.find` for a single look-up."""
    return QuoteIndex(text).find(quote)


def check_quote(quote: str, text: str) -> QuoteCheck:
    """:meth:`QuoteIndex.check` for a single look-up."""
    return QuoteIndex(text).check(quote)
