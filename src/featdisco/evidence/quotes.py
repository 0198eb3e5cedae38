"""Checking an autorater's quote against the piece it claims to quote.

A quote is evidence only if it is in the text. Models re-space, re-case and re-punctuate what
they quote, so the match ignores differences of whitespace and case, typographic quote marks,
and quotation marks or ellipses wrapped around the whole quote; nothing else. A found quote
gets its character span in the original text (what a reader highlights); one that is not
found is flagged unverified, never shown as evidence. The share of unverified quotes in a run
measures how often the autorater invents its evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

# Typographic marks folded to their plain form on both sides of the match.
_FOLD = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "„": '"', "′": "'", "–": "-", "—": "-"})
_WRAP = "\"'“”‘’«»`"
_ELLIPSES = ("...", "…")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int


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
        """The span of ``quote`` in the original text, or None when it is not there (or empty)."""
        exact = quote.strip()
        if exact and (at := self.text.find(exact)) >= 0:  # most quotes are copied exactly
            return Span(at, at + len(exact))
        needle = normalise(quote)
        if not needle:
            return None
        norm = self._norm if self._norm is not None else self._build()
        at = norm.find(needle)
        if at < 0:
            return None
        return Span(self._origin[at], self._origin[at + len(needle) - 1] + 1)


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
