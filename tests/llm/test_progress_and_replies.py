"""Progress lines when not on a terminal; reply parsing and refusal detection."""

from __future__ import annotations

import logging

import pytest

from featdisco.llm.base import LLMResponse
from featdisco.llm.progress import LogProgress, NullProgress, RichProgress, make_progress
from featdisco.llm.validate import ReplyProblem, check_reply, looks_like_refusal, parse_json
from tests.llm.conftest import SCHEMA


def test_log_progress_reports_counts_cost_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    p = LogProgress(interval=0.0)
    with caplog.at_level(logging.INFO, logger="featdisco.llm"):
        p.start(total=10, cached=4, desc="featurize")
        p.advance(failed=False, tokens=100, cost=0.5)
        p.advance(failed=True, tokens=50, cost=0.25)
        p.finish()
    last = caplog.records[-1].getMessage()
    assert "featurize: 6/10 done (4 cached, 1 failed)" in last
    assert "150 tokens" in last and "$0.7500" in last and "ETA" in last


def test_make_progress_modes() -> None:
    assert isinstance(make_progress("none"), NullProgress)
    assert isinstance(make_progress("log"), LogProgress)
    assert isinstance(make_progress("rich"), RichProgress)
    assert isinstance(make_progress("auto"), LogProgress)  # pytest's stderr is no TTY
    with pytest.raises(ValueError):
        make_progress("tqdm-please")


@pytest.mark.parametrize("text", [
    '{"a": 1}', '```json\n{"a": 1}\n```', 'Here you go:\n{"a": 1}\nHope it helps.'])
def test_parse_json_forgives_wrappers(text: str) -> None:
    assert parse_json(text) == {"a": 1}


def test_check_reply_reasons() -> None:
    good = '{"echo": "x", "features": ["F"]}'
    assert check_reply(LLMResponse(good), SCHEMA)["features"] == ["F"]
    cases = {
        "refusal": LLMResponse("I'm sorry, but I can't assist with that."),
        "empty": LLMResponse("  "),
        "truncated": LLMResponse('{"echo": "x", "feat', finish_reason="length"),
        "invalid-json": LLMResponse('{"echo": "x", "feat'),
        "schema": LLMResponse('{"echo": "x", "features": "F"}'),
    }
    for reason, resp in cases.items():
        with pytest.raises(ReplyProblem) as info:
            check_reply(resp, SCHEMA)
        assert info.value.reason == reason
    # a valid reply that happens to mention an apology is not a refusal
    assert check_reply(LLMResponse('{"echo": "I\'m sorry", "features": ["Apologises"]}'), SCHEMA)
    assert not looks_like_refusal("Sorting algorithms compared")
