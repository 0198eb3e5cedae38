"""A quote is evidence only if it is in the piece: found despite re-spacing and re-casing,
with the span of the piece's own text; anything else is not found."""

from __future__ import annotations

import json
from pathlib import Path

from featdisco.quotes import QuoteIndex, locate

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


CONCAT = "Joining strings by concatenation is slow in a loop; use str.join instead."


def test_fragments_and_inner_word_pieces_are_not_evidence() -> None:
    """A plain substring test verified all of these (issue 22)."""
    index = QuoteIndex(CONCAT)
    for quote, why in ((".", "too_short"), ("e", "too_short"), ("in a", "too_short"), ("   ", "too_short"),
                       ("cat", "inside_word"), ("concat", "inside_word"), ("atenation is", "inside_word"),
                       ("CAT", "inside_word"), ("slow in a while", "not_found")):
        got = index.check(quote)
        assert (got.verified, got.failure, got.span) == (False, why, None), quote
        assert index.find(quote) is None


def test_word_bounded_quotes_still_verify() -> None:
    index = QuoteIndex(CONCAT)
    for quote, expected in (("concatenation", "concatenation"), ("by Concatenation is SLOW", "by concatenation is slow"),
                            ("use str.join", "use str.join"), ("“Joining strings”", "Joining strings"),
                            ("...in a loop;", "in a loop;"), ("str.join instead.", "str.join instead.")):
        got = index.check(quote)
        assert got.verified and got.failure is None, quote
        assert got.span is not None and CONCAT[got.span.start:got.span.end] == expected


def test_a_bounded_occurrence_after_an_inner_one_is_found() -> None:
    text = "The category of a cat."
    span = QuoteIndex(text).find("cat")
    assert span is not None and (span.start, span.end) == (18, 21)


def test_unspaced_scripts_are_matched_by_characters() -> None:
    text = "我们今天讨论字符串拼接的性能问题。"
    got = QuoteIndex(text).check("字符串拼接")
    assert got.verified and got.span is not None and text[got.span.start:got.span.end] == "字符串拼接"


def test_featurize_stores_why_each_quote_failed_and_counts_it(tmp_path: Path) -> None:
    """features.parquet holds a ``quote_failure`` per unverified quote; the stage's counts and
    the run summary's evidence line give the count per reason."""
    import pyarrow as pa

    from featdisco.llm.cache import CallCache
    from featdisco.llm.engine import CallEngine
    from featdisco.llm.openai import OpenAILLM
    from featdisco.prompts import load_prompt
    from featdisco.stages.featurize import FeaturizeConfig, evidence_line, featurize
    from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply

    quotes = {"Uses concatenation": "concatenation", "Mentions a pet": "cat", "Ends a sentence": ".",
              "Quotes a library": "str.JOIN instead", "Invents a claim": "strings are immutable"}

    def handler(req: FakeRequest) -> Reply:
        return Reply(content=json.dumps({"features": [{"feature": f, "quote": q} for f, q in quotes.items()]}))

    pieces = pa.table({"piece_id": ["p"], "transcript_id": ["t"], "kind": ["response"], "text": [CONCAT]})
    with FakeOpenAIServer(handler) as srv:
        llm = OpenAILLM("fake", base_url=srv.base_url, api_key="sk-test", concurrency=1)
        engine = CallEngine(llm, CallCache(str(tmp_path / "c.sqlite")), concurrency=1, progress="none")
        table, report = featurize(pieces, engine, load_prompt("featurize"), FeaturizeConfig(min_features=1))
    got = {r["quote"]: (r["verified"], r["quote_failure"]) for r in table.to_pylist()}
    assert got == {"concatenation": (True, None), "cat": (False, "inside_word"), ".": (False, "too_short"),
                   "str.JOIN instead": (True, None), "strings are immutable": (False, "not_found")}
    counts = report.as_dict()
    assert counts["quote_failures"] == {"inside_word": 1, "too_short": 1, "not_found": 1}
    line = evidence_line(counts)
    assert line is not None and "inside_word 1, not_found 1, too_short 1" in line


def test_scan_answers_quotes_use_the_same_check() -> None:
    import pandas as pd

    from featdisco.evidence.scan import AnswerSpec, answers_table
    from featdisco.llm.engine import CallResult

    pieces = pd.DataFrame({"piece_id": ["a", "b", "c"], "transcript_id": ["t"] * 3,
                           "kind": ["response"] * 3, "text": [CONCAT] * 3})
    replies = [{"answer": True, "quote": q, "reason": "It says so."} for q in ("cat", ".", "by concatenation")]
    table = answers_table(pieces, [CallResult(f"k{i}", "ok", data=r) for i, r in enumerate(replies)], AnswerSpec())
    assert table.column("verified").to_pylist() == [False, False, True]
    assert table.column("span").to_pylist()[2] == {"start": 16, "end": 32}
