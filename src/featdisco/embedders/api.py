"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` server, on the official SDK.

OpenAI, vLLM, Ollama, llama.cpp server, Together and others speak the same protocol, so
one backend serves them all. The key comes from ``FEATDISCO_EMBED_API_KEY`` (so embeddings
can use another account or server than the autorater) or else ``OPENAI_API_KEY``; it is
handed to the SDK and never stored on this object, printed or put in an error message.
The SDK retries rate limits and server errors with backoff; what still fails is raised as
an :class:`EmbedderError` with the server's message, keys redacted.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import openai

from featdisco.embedders.base import EmbedderError, check_output, l2_normalize
from featdisco.llm.base import redact

KEY_VARS = ("FEATDISCO_EMBED_API_KEY", "OPENAI_API_KEY")
BASE_URL_VAR = "FEATDISCO_EMBED_BASE_URL"


class ApiEmbedder:
    """``model`` served at ``base_url`` (default: ``FEATDISCO_EMBED_BASE_URL``, else the
    SDK's own default, which honours ``OPENAI_BASE_URL``).

    ``batch_size`` strings go in one request. ``dim`` is learned from the first reply when
    not given. ``encoding_format`` 'float' is the most widely supported; 'base64' is smaller
    on the wire where the server has it. Local servers need no key: one is made up for them.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 256,
        dim: int | None = None,
        dimensions: int | None = None,
        encoding_format: Literal["float", "base64"] = "float",
        timeout: float = 60.0,
        max_retries: int = 5,
    ) -> None:
        if not model:
            raise EmbedderError("api: embedder needs a model name, as in api:text-embedding-3-small")
        if batch_size < 1:
            raise EmbedderError("batch_size must be at least 1")
        base_url = base_url or os.environ.get(BASE_URL_VAR) or None
        key = api_key or next((os.environ[v] for v in KEY_VARS if os.environ.get(v)), None)
        if key is None:
            if base_url is None:
                raise EmbedderError(
                    f"api: embedder has no key: set {' or '.join(KEY_VARS)}, or give a "
                    "base_url for a local server that needs none")
            key = "no-key-needed"
        self._secrets: tuple[str, ...] = (key,)
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout,
                                     max_retries=max_retries)
        self.model = model
        self.base_url = str(self._client.base_url)
        self.name = f"api:{model}" + (f":{dimensions}" if dimensions else "")
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.encoding_format = encoding_format
        self._dim = dim or dimensions

    def __repr__(self) -> str:
        return f"ApiEmbedder(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def dim(self) -> int:
        """The vector length; asks the server once when it was not given."""
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in order, ``batch_size`` per request."""
        parts = [self._request(list(texts[s:s + self.batch_size]))
                 for s in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.empty((0, self.dim), dtype=np.float32)
        return check_output(np.concatenate(parts), len(texts), self.dim, self.name)

    def _request(self, batch: list[str]) -> np.ndarray:
        # OpenAI rejects empty strings; a space embeds as "nothing" on every server.
        inputs = [t if t else " " for t in batch]
        try:
            resp = self._client.embeddings.create(
                model=self.model, input=inputs, encoding_format=self.encoding_format,
                dimensions=self.dimensions if self.dimensions else openai.omit)
        except openai.OpenAIError as e:
            msg = redact(str(e), self._secrets)
            raise EmbedderError(f"embeddings request to {self.base_url} failed: {msg}") from None
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(batch):
            raise EmbedderError(f"{self.base_url} returned {len(data)} embeddings "
                                f"for {len(batch)} inputs")
        try:
            return l2_normalize(np.stack([_vector(d.embedding) for d in data]))
        except ValueError as e:
            raise EmbedderError(f"{self.base_url} returned embeddings of unequal length") from e


def _vector(v: object) -> np.ndarray:
    """One embedding as float32, from a list of floats or, when base64 was asked for
    explicitly (the SDK then leaves it alone), from little-endian float32 bytes."""
    if isinstance(v, str):
        return np.frombuffer(base64.b64decode(v), dtype="<f4").astype(np.float32)
    return np.asarray(v, dtype=np.float32)
