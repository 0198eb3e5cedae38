"""The registry of record formats, in detection order (most specific first)."""

from __future__ import annotations

from featdisco.transcripts.formats import (
    anthropic,
    benchmarks,
    gemini,
    hh_rlhf,
    inspect,
    openai,
    sharegpt,
    tabular,
    template,
)
from featdisco.transcripts.formats.common import Conversation, FormatSpec, ParseContext

FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        inspect.SPEC,
        benchmarks.ANSWERS,
        benchmarks.QUESTIONS,
        anthropic.SPEC,
        openai.SPEC,
        gemini.SPEC,
        sharegpt.SPEC,
        hh_rlhf.SPEC,
        benchmarks.ALPACA,
        template.SPEC,
        tabular.SPEC,
    )
}

__all__ = ["FORMATS", "Conversation", "FormatSpec", "ParseContext"]
