"""Featurize's stored record: cleaned, de-duplicated, and free of copied prompt examples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm.engine import CallResult
from featdisco.prompts import load_prompt
from featdisco.stages.featurize import (
    FeaturizeConfig,
    build_requests,
    clean_feature,
    example_features,
    features_from_result,
)


def test_clean_feature_keeps_plain_letters() -> None:
    assert clean_feature("  uses   (many) emojis: 3 of them. ") == "Uses many emojis of them"
    assert clean_feature("**Bold** markdown") == "Bold markdown"
    assert clean_feature("123 ()") == ""


def test_examples_duplicates_and_empties_are_dropped() -> None:
    prompt = load_prompt("featurize")
    examples = example_features(prompt)
    assert {"uses markdown headers", "in mandarin", "shows evaluation awareness"} <= examples
    result = CallResult("k", "ok", data={"features": [
        "Uses markdown headers", "Counts remaining tokens", "counts  remaining tokens", "42", "  ", "In Mandarin",
        "Quotes a poem", "A journey that leaves you with the spirit of Aloha in every heartfelt smile",
        "° °", "N=", "Regions="]})
    dropped: Counter[str] = Counter()
    assert [f.text for f in features_from_result(result, examples, dropped)] == [
        "Counts remaining tokens", "Quotes a poem", "Regions"]
    assert dropped == {"example": 2, "duplicate": 1, "empty": 1, "too_long": 1, "no_letters": 3}


def test_requests_carry_the_piece_alone_and_truncate_long_ones() -> None:
    prompt = load_prompt("featurize")
    cfg = FeaturizeConfig(min_features=3, max_features=5, max_piece_tokens=100)
    reqs, truncated = build_requests(["short piece", "x" * 1000], ["user", "thought"], prompt, cfg)
    assert truncated == 1
    assert "short piece" in reqs[0].messages[-1].content
    assert "private reasoning" in reqs[1].messages[-1].content
    assert "[… truncated: 600 more characters not shown]" in reqs[1].messages[-1].content
    assert reqs[0].schema is not None
    assert reqs[0].schema["properties"]["features"]["minItems"] == 3
    assert reqs[0].schema["properties"]["features"]["items"]["required"] == ["feature", "quote"]
    assert "verbatim quote" in reqs[0].messages[-1].content
    plain, _ = build_requests(["short piece"], ["user"], load_prompt("featurize", version=1),
                              FeaturizeConfig(min_features=3, max_features=5, evidence=False))
    assert plain[0].schema is not None and plain[0].schema["properties"]["features"]["items"]["type"] == "string"
    assert plain[0].sampling.max_tokens < reqs[0].sampling.max_tokens
    assert reqs[0].prompt_version == prompt.version


def test_bad_feature_bounds() -> None:
    with pytest.raises(FeatdiscoError, match="min-features"):
        FeaturizeConfig(min_features=12, max_features=5)


def test_featurize_in_chunks_equals_one_pass(tmp_path: Path) -> None:
    """Big runs featurize a chunk of pieces at a time to bound memory; the features table
    must not depend on the chunking, and identical pieces in later chunks cost no call."""
    import pyarrow as pa

    from featdisco.llm.cache import CallCache
    from featdisco.llm.engine import CallEngine
    from featdisco.llm.openai import OpenAILLM
    from featdisco.stages.featurize import featurize
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.pipeline_fakes import expected_quotes, pipeline_handler

    texts = [f"Piece number {i % 23} about something" for i in range(40)]  # 23 distinct
    pieces = pa.table({"piece_id": [f"p{i}" for i in range(40)],
                       "transcript_id": [f"t{i // 3}" for i in range(40)],
                       "kind": ["user" if i % 2 else "response" for i in range(40)],
                       "text": texts})
    prompt = load_prompt("featurize")
    tables = []
    with FakeOpenAIServer(pipeline_handler) as srv:
        for name, chunk in (("one", 1000), ("chunked", 7)):
            srv.reset()
            llm = OpenAILLM("fake", base_url=srv.base_url, api_key="sk-test", concurrency=4)
            cache = CallCache(str(tmp_path / f"{name}.sqlite"))
            engine = CallEngine(llm, cache, concurrency=4, progress="none")
            table, report = featurize(pieces, engine, prompt, chunk_pieces=chunk)
            cache.close()
            assert report.ok == 40 and report.failed == 0
            # every piece gets the scripted quotes: one empty, two invented, seven found
            assert report.quotes == {k: v * 40 for k, v in expected_quotes().items()}
            assert report.unverified_share == 2 / 9
            distinct_requests = len({(t, k) for t, k in zip(texts, pieces.column("kind").to_pylist(),
                                                             strict=True)})
            assert srv.total == distinct_requests
            tables.append(table)
    assert tables[0].num_rows >= 400
    assert tables[0].equals(tables[1])


def test_quotes_are_verified_with_their_span_and_invented_ones_flagged(tmp_path: Path) -> None:
    """features.parquet carries each feature's quote, its span in the piece and a verified
    flag; quotes the rater invented are kept but flagged, and counted in the report."""
    import pyarrow as pa

    from featdisco.llm.cache import CallCache
    from featdisco.llm.engine import CallEngine
    from featdisco.llm.openai import OpenAILLM
    from featdisco.stages.featurize import featurize
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.pipeline_fakes import HALLUCINATED, pipeline_handler

    texts = ["I am SO sorry   for the delay, here is the recipe you asked for today",
             "The model keeps counting its remaining token budget while it plans the answer"]
    pieces = pa.table({"piece_id": ["a", "b"], "transcript_id": ["t", "t"], "kind": ["response", "thought"],
                       "text": texts})
    with FakeOpenAIServer(pipeline_handler) as srv:
        llm = OpenAILLM("fake", base_url=srv.base_url, api_key="sk-test", concurrency=2)
        engine = CallEngine(llm, CallCache(str(tmp_path / "c.sqlite")), concurrency=2, progress="none")
        table, report = featurize(pieces, engine, load_prompt("featurize"))
    rows = table.to_pylist()
    assert {"quote", "quote_start", "quote_end", "verified"} <= set(table.column_names)
    for r in rows:
        text = texts[0] if r["piece_id"] == "a" else texts[1]
        if r["quote"] == "":
            assert r["verified"] is None and r["quote_start"] is None
        elif r["quote"] == HALLUCINATED:
            assert r["verified"] is False and r["quote_start"] is None
        else:  # re-cased and re-spaced by the rater, found all the same, and the span is the piece's own text
            assert r["verified"] is True
            shown = text[r["quote_start"]:r["quote_end"]]
            assert " ".join(shown.lower().split()) == " ".join(r["quote"].lower().split())
    assert report.quotes["unverified"] == 4 and report.as_dict()["unverified_share"] == round(4 / 18, 4)


def test_no_evidence_gives_plain_features(tmp_path: Path) -> None:
    import pyarrow as pa

    from featdisco.llm.cache import CallCache
    from featdisco.llm.engine import CallEngine
    from featdisco.llm.openai import OpenAILLM
    from featdisco.stages.featurize import featurize
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.pipeline_fakes import pipeline_handler

    pieces = pa.table({"piece_id": ["a"], "transcript_id": ["t"], "kind": ["user"], "text": ["Hello there friend"]})
    with FakeOpenAIServer(pipeline_handler) as srv:
        llm = OpenAILLM("fake", base_url=srv.base_url, api_key="sk-test", concurrency=1)
        engine = CallEngine(llm, CallCache(str(tmp_path / "c.sqlite")), concurrency=1, progress="none")
        table, report = featurize(pieces, engine, load_prompt("featurize", version=1),
                                  FeaturizeConfig(evidence=False))
    assert table.num_rows == 10 and table.column("quote").null_count == 10
    assert "quotes" not in report.as_dict()


def test_a_feature_that_copies_its_quote_is_dropped_and_counted() -> None:
    """Small raters (the local 1.5B model, measured) answer the quote request by copying
    sentences as features: those are the piece's words, not features, and are not clustered."""
    prompt = load_prompt("featurize")
    result = CallResult("k", "ok", data={"features": [
        {"feature": "I hope this email finds you well.", "quote": "I hope this email finds you well."},
        {"feature": "Opens with a polite greeting", "quote": "I hope this email finds you well."},
        {"feature": "Apologizes", "quote": "apologizes"}]})
    dropped: Counter[str] = Counter()
    found = features_from_result(result, example_features(prompt), dropped, evidence=True)
    assert [(f.text, f.quote) for f in found] == [
        ("Opens with a polite greeting", "I hope this email finds you well."), ("Apologizes", "apologizes")]
    assert dropped == {"copies_quote": 1}


def test_calls_go_one_kind_after_the_other_and_features_land_on_their_pieces() -> None:
    """Issue 23: consecutive calls of one kind share their prompt up to the piece, which the
    local model keeps in its KV cache; the pieces alternate kinds, the calls must not, and each
    piece still gets its own reply's features."""
    import re

    import pyarrow as pa

    from featdisco.stages.featurize import FeaturizeConfig, featurize

    class Recorder:
        """An engine that answers every request with a feature naming its piece."""

        def __init__(self) -> None:
            self.kinds: list[str] = []

        def run_sync(self, requests: list, desc: str = "") -> list[CallResult]:
            out = []
            for r in requests:
                user = r.messages[-1].content
                self.kinds.append("user" if "a message a user wrote" in user else "response")
                word = re.search(r"<piece>\s*(\w+)", user).group(1)  # type: ignore[union-attr]
                out.append(CallResult(word, "ok", data={"features": [f"Talks about {word}"]}))
            return out

    kinds = ["user" if i % 2 else "response" for i in range(10)]
    words = ["anchors", "boats", "cheese", "dogs", "eagles", "forks", "grapes", "hats", "ink", "jam"]
    pieces = pa.table({"piece_id": [f"p{i}" for i in range(10)], "transcript_id": [f"t{i // 2}" for i in range(10)],
                       "kind": kinds, "text": [f"{w} and more" for w in words]})
    engine = Recorder()
    table, report = featurize(pieces, engine, load_prompt("featurize", version=3),  # type: ignore[arg-type]
                              FeaturizeConfig(min_features=1, max_features=3, evidence=False))
    assert report.ok == 10
    assert engine.kinds == sorted(kinds)  # two runs of one kind, not ten alternations
    got = dict(zip(table.column("piece_id").to_pylist(), table.column("text").to_pylist(), strict=True))
    assert got == {f"p{i}": f"Talks about {w}" for i, w in enumerate(words)}
