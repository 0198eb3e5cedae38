"""Choosing a backend from flags and the environment, in one place.

Precedence: explicit arguments (the CLI's ``--llm/--model/--base-url``), then
``FEATDISCO_LLM``, ``FEATDISCO_MODEL``, ``FEATDISCO_BASE_URL``. With no backend named, a
base URL or an ``OPENAI_API_KEY`` means ``openai`` and an ``ANTHROPIC_API_KEY`` means
``anthropic``; with nothing at all, the embedded local model, so the tool runs offline
out of the box — with a warning, because its features are demo quality.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMBackend

log = logging.getLogger("featdisco.llm")

BACKENDS: tuple[str, ...] = ("openai", "anthropic", "local")
DEFAULT_MODELS = {"openai": "gpt-4.1-mini", "anthropic": "claude-haiku-4-5"}
LOCAL_WARNING = ("no LLM configured: using the embedded local model (Qwen2.5-Coder-1.5B, "
                 "demo quality, slow); set --llm/--model or FEATDISCO_LLM and an API key "
                 "for real results")


def resolve_backend(llm: str | None = None, base_url: str | None = None) -> tuple[str, bool]:
    """The backend name and whether it was chosen by default (nothing configured)."""
    name = (llm or os.environ.get("FEATDISCO_LLM") or "").strip().lower()
    if name:
        if name not in BACKENDS:
            raise FeatdiscoError(f"unknown LLM backend {name!r}; choose one of "
                                 f"{', '.join(BACKENDS)}")
        return name, False
    if base_url or os.environ.get("FEATDISCO_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        return "openai", False
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic", False
    return "local", True


def make_llm(llm: str | None = None, model: str | None = None, base_url: str | None = None,
             concurrency: int = 64, *, timeout: float = 60.0, api_key: str | None = None,
             **opts: Any) -> LLMBackend:
    """Build the backend the user asked for.

    ``opts`` go to the backend: ``json_mode`` ('schema', 'object', 'prompt') for openai
    and anthropic ('tool' or 'prompt' there), ``model_path``, ``n_ctx`` and ``n_threads``
    for local. A model name is required for a custom base URL, as no default fits an
    unknown server.
    """
    name, by_default = resolve_backend(llm, base_url)
    model = model or os.environ.get("FEATDISCO_MODEL") or None
    base_url = base_url or os.environ.get("FEATDISCO_BASE_URL") or None
    if name == "local":
        if by_default:
            log.warning(LOCAL_WARNING)
        from featdisco.llm.local import LocalLLM

        local_opts = {k: v for k, v in opts.items() if k in ("n_ctx", "n_threads")}
        return LocalLLM(model_path=opts.get("model_path") or model, **local_opts)
    if name == "openai":
        from featdisco.llm.openai import OpenAILLM

        if model is None:
            if base_url is not None:
                raise FeatdiscoError("--model is required with --base-url (the name the "
                                     "server knows the model by)")
            model = DEFAULT_MODELS["openai"]
        return OpenAILLM(model, base_url=base_url, api_key=api_key, concurrency=concurrency,
                         timeout=timeout, **_only(opts, ("json_mode", "max_tokens_param",
                                                         "default_headers")))
    from featdisco.llm.anthropic import AnthropicLLM

    return AnthropicLLM(model or DEFAULT_MODELS["anthropic"], base_url=base_url,
                        api_key=api_key, concurrency=concurrency, timeout=timeout,
                        **_only(opts, ("json_mode",)))


def _only(opts: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(allowed) - {"model_path", "n_ctx", "n_threads"})
    if unknown:
        raise FeatdiscoError(f"unknown LLM option(s): {', '.join(unknown)}")
    return {k: v for k, v in opts.items() if k in allowed and v is not None}
