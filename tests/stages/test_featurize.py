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
        "Uses markdown headers", "Counts remaining tokens", "counts  remaining tokens", "42", "In Mandarin",
        "Quotes a poem", "A journey that leaves you with the spirit of Aloha in every heartfelt smile"]})
    dropped: Counter[str] = Counter()
    assert features_from_result(result, examples, dropped) == ["Counts remaining tokens", "Quotes a poem"]
    assert dropped == {"example": 2, "duplicate": 1, "empty": 1, "too_long": 1}


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
    from tests.pipeline_fakes import pipeline_handler

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
            distinct_requests = len({(t, k) for t, k in zip(texts, pieces.column("kind").to_pylist(),
                                                             strict=True)})
            assert srv.total == distinct_requests
            tables.append(table)
    assert tables[0].num_rows >= 400
    assert tables[0].equals(tables[1])
