"""Embedding backends behind one protocol, chosen by name.

``make_embedder()`` gives the offline default ``minilm-q8`` (all-MiniLM-L6-v2 on
onnxruntime with int8 matrix multiplies, derived once from the shipped model; no torch);
``"minilm"`` the shipped model as it is (int8 weights, float arithmetic);
``"static"`` a Model2Vec static model distilled from that MiniLM (a token-vector lookup,
hundreds of times faster on a CPU, for large runs);
``"st:<path>"`` a local sentence-transformers model; ``"api:<model>"`` an OpenAI-compatible
embeddings server. Backends are imported only when chosen, so a missing optional
dependency matters only to the user who asked for it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from featdisco.embedders.base import Embedder, EmbedderError, l2_normalize

DEFAULT_EMBEDDER = "minilm-q8"
# The default before minilm-q8: a run whose config names no embedder was embedded with it.
LEGACY_EMBEDDER = "minilm"

__all__ = ["DEFAULT_EMBEDDER", "LEGACY_EMBEDDER", "Embedder", "EmbedderError", "l2_normalize",
           "make_embedder", "recorded_embedder", "resolve_embedder"]


def recorded_embedder(config: object) -> str | None:
    """The embedder a run's stored ``config`` says its vectors came from: its ``embedder``,
    or :data:`LEGACY_EMBEDDER` for a run that recorded none (every run records it since the
    default changed, so a rerun or a ``find`` never embeds with another model than the run
    did); None without a stored config."""
    if not isinstance(config, dict) or not config:
        return None
    name = config.get("embedder")
    return str(name) if name else LEGACY_EMBEDDER


# name → (module, class) of the backend; imported only when chosen
_BACKENDS = {"minilm": ("featdisco.embedders.onnx_minilm", "OnnxMiniLM"),
             "minilm-q8": ("featdisco.embedders.onnx_minilm", "OnnxMiniLMQ8"),
             "static": ("featdisco.embedders.static", "StaticMiniLM"),
             "st": ("featdisco.embedders.sentence_transformers", "SentenceTransformerEmbedder"),
             "api": ("featdisco.embedders.api", "ApiEmbedder")}


def resolve_embedder(name: str | None) -> tuple[str, str, str, tuple[str, ...]]:
    """``(spec, module, class name, positional args)`` of the embedder ``name`` names, without
    importing or loading anything: a run checks its ``--embedder`` with this before it
    spends or records anything, and :func:`make_embedder` builds from it."""
    spec = (name or DEFAULT_EMBEDDER).strip()
    kind, sep, arg = spec.partition(":")
    if not sep and spec in ("minilm", "minilm-q8", "static"):
        return (spec, *_BACKENDS[spec], ())
    if sep and kind in ("st", "api") and arg:
        return (spec, *_BACKENDS[kind], (arg,))
    raise EmbedderError(f"unknown embedder {spec!r}: use minilm, minilm-q8, static, st:<model directory> "
                        "or api:<model name>")


def make_embedder(name: str | None = None, **opts: Any) -> Embedder:
    """Build the embedder ``name`` names (``minilm-q8`` when None), passing ``opts`` to it.

    Unknown names and unknown options are a clear :class:`EmbedderError`, since they
    usually come straight from a config file or a command line.
    """
    spec, module, class_name, args = resolve_embedder(name)
    cls: Any = getattr(importlib.import_module(module), class_name)
    params = list(inspect.signature(cls.__init__).parameters)
    allowed = params[1 + len(args):]  # after self and what the name already gave
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise EmbedderError(f"embedder {spec!r} has no option {', '.join(unknown)} "
                            f"(it takes: {', '.join(allowed)})")
    embedder: Embedder = cls(*args, **opts)
    return embedder
