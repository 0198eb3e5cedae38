"""The LLM side of the analyses: the same engine, cache and backend a run used.

Label scoring and parent naming go through :class:`featdisco.pipeline.Pipeline`'s engine, so
they hit the run's ``llm_cache.sqlite`` (a rerun costs nothing), honour its rate limits and
cost accounting, and default to the backend and model recorded in the run's manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from featdisco.llm.summary import LLMUse
from featdisco.pipeline import Pipeline, config_from_manifest
from featdisco.runsummary import ANALYSIS_SCOPE, record_invocation


class LLMChoice(TypedDict):
    """The backend an analysis asks, as its command's flags gave it (None: the run's)."""

    llm: str | None
    model: str | None
    base_url: str | None
    concurrency: int | None
    prices: str | None


def open_pipeline(run_dir: str | Path, *, llm: str | None = None, model: str | None = None,
                  base_url: str | None = None, concurrency: int | None = None,
                  max_cost: float | None = None, prices: str | None = None,
                  analysis: str = "") -> Pipeline:
    """A pipeline on ``run_dir`` configured from its manifest, with explicit overrides; the
    analyses use their own packaged prompts. Its calls are accounted to ``analysis`` in the
    run's usage ledger as they complete; the run's budget applies."""
    cfg = config_from_manifest(run_dir, dict(llm=llm, model=model, base_url=base_url,
                                             concurrency=concurrency, max_cost=max_cost, prices=prices),
                               fitted_prompts=False, required=False)
    pipe = Pipeline(run_dir, cfg, progress="none")
    pipe.account.scope = ANALYSIS_SCOPE + analysis if analysis else ""
    return pipe


def close_pipeline(pipe: Pipeline, analysis: str) -> LLMUse:
    """Add the analysis's LLM use to the run's totals (``featdisco status``, the report), then
    close the pipeline; returns that use (failed calls and why included)."""
    try:
        used = pipe.engine.summary.use()
        record_invocation(pipe.dir, used, analysis=analysis, prices=pipe.prices_used())
        return used
    finally:
        pipe.close()
