"""Any local sentence-transformers model, for users who want a bigger or domain model.

torch and sentence-transformers are heavy, so they are an optional extra
(``pip install 'featdisco[st]'``) imported only when this backend is built. The model is
loaded from a local directory: this tool runs where the Hub may be unreachable, and a path
makes the cache key (``st:<resolved path>``) name exactly what was used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featdisco.embedders.base import EmbedderError, check_output, l2_normalize


class SentenceTransformerEmbedder:
    """A sentence-transformers model from ``path``, rows L2-normalised.

    ``name`` defaults to ``st:<resolved path>``; pass ``name=`` when the same directory may
    hold different weights over time, so the cache does not mix them. ``device=None`` lets
    sentence-transformers pick CUDA (or MPS) when torch sees one, else the CPU: the way to
    embed on a GPU.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        name: str | None = None,
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbedderError(
                "the st: embedder needs sentence-transformers and torch, which are not "
                "installed: pip install 'featdisco[st]'"
            ) from e
        p = Path(path).expanduser()
        if not p.is_dir():
            raise EmbedderError(f"st: embedder: {path} is not a local model directory")
        try:
            self._model: Any = SentenceTransformer(str(p.resolve()), device=device,
                                                   local_files_only=True)
        except Exception as e:  # the library raises many types for a bad directory
            raise EmbedderError(f"st: embedder: cannot load a model from {p}: {e}") from e
        if max_length is not None:
            self._model.max_seq_length = max_length
        self.name = name or f"st:{p.resolve()}"
        self.batch_size = batch_size
        self.dim = self._dimension()

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(name={self.name!r})"

    def _dimension(self) -> int:
        for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
            fn = getattr(self._model, attr, None)
            dim = fn() if fn is not None else None
            if dim:
                return int(dim)
        return int(self._encode(["dimension probe"]).shape[1])

    def _encode(self, texts: list[str]) -> np.ndarray:
        x = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                               normalize_embeddings=False, show_progress_bar=False)
        return l2_normalize(np.asarray(x, dtype=np.float32))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in order."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return check_output(self._encode(list(texts)), len(texts), self.dim, self.name)
