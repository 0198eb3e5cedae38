"""The registry of record formats, in detection order (most specific first)."""

from __future__ import annotations

from featdisco.transcripts.formats import (
    agents,
    anthropic,
    api_logs,
    benchmarks,
    claude_code,
    gemini,
    hh_rlhf,
    inspect,
    openai,
    pieces_input,
    responses,
    sharegpt,
    tabular,
    template,
    tree,
)
from featdisco.transcripts.formats.common import Conversation, FormatSpec, ParseContext

FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        pieces_input.SPEC,
        inspect.SPEC,
        benchmarks.ANSWERS,
        benchmarks.QUESTIONS,
        claude_code.SPEC,
        tree.NESTED,
        tree.ROWS,
        agents.SWE_AGENT,
        agents.MINI_SWE_AGENT,
        agents.OPENHANDS,
        api_logs.BATCH_OUTPUT,
        api_logs.BATCH_INPUT,
        api_logs.PAIR,
        api_logs.COMPLETION,
        responses.SPEC,
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
