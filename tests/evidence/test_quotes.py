"""A quote is evidence only if it is in the piece: found despite re-spacing and re-casing,
with the span of the piece's own text; anything else is not found."""

from __future__ import annotations

from featdisco.evidence.quotes import QuoteIndex, locate

TEXT = "Hello,\n  I am SORRY for   the delay! It’s late; “quoted” words…"


def shown(quote: str, text: str = TEXT) -> str | None:
    span = locate(quote, text)
    return None if span is None else text[span.start:span.end]


def test_whitespace_case_and_typographic_marks_do_not_matter() -> None:
    assert shown("sorry for the delay") == "SORRY for   the delay"
    assert shown("I am sorry\nfor the delay!") == "I am SORRY for   the delay!"
    assert shown("it's late") == "It’s late"
    assert shown('"quoted" words') == "“quoted” words"


def test_wrapping_quotation_marks_and_ellipses_are_not_part_of_the_quote() -> None:
    assert shown('"...for the delay..."') == "for   the delay"
    assert shown("“I am SORRY”") == "I am SORRY"


def test_anything_else_is_not_found() -> None:
    for quote in ("sorry for the wait", "sorry for the delays!!", "Hello, I am not sorry", "", "   ", "..."):
        assert shown(quote) is None, quote


def test_an_exact_copy_is_found_where_it_is() -> None:
    text = "sorry. Sorry again. sorry"
    index = QuoteIndex(text)
    span = index.find("Sorry again")
    assert span is not None and text[span.start:span.end] == "Sorry again"
    last = index.find("again. sorry")
    assert last is not None and last.end == len(text)
