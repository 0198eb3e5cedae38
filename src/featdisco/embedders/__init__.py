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

import inspect
from typing import Any

from featdisco.embedders.base import Embedder, EmbedderError, l2_normalize

DEFAULT_EMBEDDER = "minilm-q8"
# The default before minilm-q8: a run whose config names no embedder was embedded with it.
LEGACY_EMBEDDER = "minilm"

__all__ = ["DEFAULT_EMBEDDER", "LEGACY_EMBEDDER", "Embedder", "EmbedderError", "l2_normalize",
           "make_embedder", "recorded_embedder"]


def recorded_embedder(config: object) -> str | None:
    """The embedder a run's stored ``config`` says its vectors came from: its ``embedder``,
    or :data:`LEGACY_EMBEDDER` for a run that recorded none (every run records it since the
    default changed, so a rerun or a ``find`` never embeds with another model than the run
    did); None without a stored config."""
    if not isinstance(config, dict) or not config:
        return None
    name = config.get("embedder")
    return str(name) if name else LEGACY_EMBEDDER


def make_embedder(name: str | None = None, **opts: Any) -> Embedder:
    """Build the embedder ``name`` names (``minilm-q8`` when None), passing ``opts`` to it.

    Unknown names and unknown options are a clear :class:`EmbedderError`, since they
    usually come straight from a config file or a command line.
    """
    spec = (name or DEFAULT_EMBEDDER).strip()
    kind, sep, arg = spec.partition(":")
    cls: Any
    args: tuple[Any, ...] = ()
    if spec == "minilm":
        from featdisco.embedders.onnx_minilm import OnnxMiniLM as cls
    elif spec == "minilm-q8":
        from featdisco.embedders.onnx_minilm import OnnxMiniLMQ8 as cls
    elif spec == "static":
        from featdisco.embedders.static import StaticMiniLM as cls
    elif sep and kind == "st" and arg:
        from featdisco.embedders.sentence_transformers import SentenceTransformerEmbedder as cls
        args = (arg,)
    elif sep and kind == "api" and arg:
        from featdisco.embedders.api import ApiEmbedder as cls
        args = (arg,)
    else:
        raise EmbedderError(f"unknown embedder {spec!r}: use minilm, minilm-q8, static, st:<model directory> "
                            "or api:<model name>")
    params = list(inspect.signature(cls.__init__).parameters)
    allowed = params[1 + len(args):]  # after self and what the name already gave
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise EmbedderError(f"embedder {spec!r} has no option {', '.join(unknown)} "
                            f"(it takes: {', '.join(allowed)})")
    embedder: Embedder = cls(*args, **opts)
    return embedder
