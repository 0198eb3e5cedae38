"""The LLM side of the analyses: the same engine, cache and backend a run used.

Label scoring and parent naming go through :class:`featdisco.pipeline.Pipeline`'s engine, so
they hit the run's ``llm_cache.sqlite`` (a rerun costs nothing), honour its rate limits and
cost accounting, and default to the backend and model recorded in the run's manifest.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from featdisco.pipeline import Pipeline, PipelineConfig
from featdisco.run import RunDir


def open_pipeline(run_dir: str | Path, *, llm: str | None = None, model: str | None = None,
                  base_url: str | None = None, concurrency: int | None = None,
                  max_cost: float | None = None) -> Pipeline:
    """A pipeline on ``run_dir`` configured from its manifest, with explicit overrides."""
    saved: dict[str, Any] = RunDir(run_dir).manifest.get("config") or {}
    known = {f.name for f in fields(PipelineConfig)}
    cfg = {k: v for k, v in saved.items() if k in known}
    for key, value in (("llm", llm), ("model", model), ("base_url", base_url),
                       ("concurrency", concurrency), ("max_cost", max_cost)):
        if value is not None:
            cfg[key] = value
    cfg["prompt_files"] = {}  # analyses use their own packaged prompts
    return Pipeline(run_dir, PipelineConfig(**cfg), progress="none")
