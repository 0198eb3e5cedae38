"""Featurize's stored record: cleaned, de-duplicated, and free of copied prompt examples."""

from __future__ import annotations

from collections import Counter

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
