"""The one protocol every embedding backend implements.

A backend turns strings into unit-length float32 rows and nothing more: de-duplication,
caching and batching across a run live in :mod:`featdisco.stages.embed`, once, for all of
them. ``name`` identifies the model exactly (it is part of every cache key), so two
backends that could give different vectors for the same text must have different names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from featdisco.errors import FeatdiscoError


class EmbedderError(FeatdiscoError):
    """An embedder cannot be built or cannot run, said so the user can fix it."""


@runtime_checkable
class Embedder(Protocol):
    """Strings in, one unit-norm float32 row of length ``dim`` per string out.

    ``name`` and ``dim`` are read-only here so that a plain attribute or a property
    (an API backend learns ``dim`` from its first reply) both satisfy the protocol.

    A backend may also have ``token_lengths(texts) -> list[int]``: the stage then orders
    strings by it before batching, so each batch pads to a similar length (without it,
    character counts stand in; they cost about 10% more padding on MiniLM).
    """

    @property
    def name(self) -> str:
        """The exact model id; part of every cache key."""
        ...

    @property
    def dim(self) -> int:
        """The length of each row."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in order: shape ``(len(texts), dim)``, float32, rows of norm 1."""
        ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length, as torch's ``F.normalize`` does (``eps`` guards zeros).

    Done in float32 in place when possible: this runs on every batch of a large run.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, eps, out=norms)
    x /= norms
    return x


def check_output(x: np.ndarray, n: int, dim: int, who: str) -> np.ndarray:
    """Validate a backend's output at the boundary, so a bad model or server fails loudly
    here rather than as a shape error deep inside clustering."""
    if x.ndim != 2 or x.shape != (n, dim):
        raise EmbedderError(f"{who} returned shape {x.shape}, expected ({n}, {dim})")
    if not np.isfinite(x).all():
        raise EmbedderError(f"{who} returned non-finite values")
    return np.ascontiguousarray(x, dtype=np.float32)
