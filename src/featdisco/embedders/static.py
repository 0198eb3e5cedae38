"""A static (Model2Vec) embedder distilled from the bundled MiniLM: a table lookup per token.

A static model keeps one vector per vocabulary token and embeds a string as the mean of its
tokens' vectors: no transformer at run time, so it is hundreds of times faster than MiniLM on
a CPU, at some cost in quality (it ignores word order and context). Feature strings are short
phrases, where that cost is smallest.

No hub can be reached at run time and no distilled model is on PyPI, so the vectors are
distilled here, once, from the int8 ONNX MiniLM that the default embedder already installs,
following Model2Vec's recipe (``model2vec.distill``, which needs torch): every vocabulary
token is run through the transformer alone (``[CLS] token [SEP]``, mean pooling over the
three positions), the ``[unusedN]`` tokens are dropped, PCA keeps ``pca_dims`` components,
and each token is weighted by SIF on a Zipf estimate of its frequency from its vocabulary
rank (``a / (a + p(rank))``), which down-weights common tokens such as "the" and "a".
This takes about 25 s on two cores and its result (31 MB) is kept in the user data dir, so
later runs load it in well under a second. Inference is Model2Vec's own ``StaticModel``
over those vectors and the MiniLM WordPiece tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featdisco.embedders.base import EmbedderError, check_output, l2_normalize
from featdisco.embedders.onnx_minilm import (
    MODEL_SHA256,
    TOKENIZER_SHA256,
    default_cache_dir,
    default_model_path,
    default_tokenizer_path,
    load_session,
    usable_cores,
    verify_file,
)

PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
# Bumped whenever the distillation maths changes, so old vector files are never reused.
RECIPE_VERSION = 1
_UNUSED = re.compile(r"\[unused\d+\]")
_DISTILL_BATCH = 256  # rows of three tokens each: the fastest batch measured on 2 cores
_MAX_LENGTH = 512  # Model2Vec's default truncation, in tokens
_HIDDEN = 384  # MiniLM's hidden size


def _load_tokenizer(path: Path) -> Any:
    """MiniLM's WordPiece tokenizer as a static model uses it: no padding, no truncation
    (``StaticModel`` truncates itself), and no ``[CLS]``/``[SEP]`` (it encodes without
    special tokens; those two would otherwise add the same vector to every string)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def extend_tokenizer(tokenizer: Any, words: Sequence[str]) -> tuple[Any, list[str]]:
    """Model2Vec's vocabulary additions: ``tokenizer`` with every word of ``words`` that it
    would split into several WordPieces added as one token (ids after the last), so such a
    word gets its own vector, distilled from MiniLM reading the whole word, instead of the
    mean of its pieces' vectors. Returns the new tokenizer and the added tokens in id order
    (normalised as the tokenizer normalises; words already in the vocabulary, repeated, or
    split by the pre-tokenizer into several words, such as ``user's``, are left out)."""
    from tokenizers import Tokenizer

    vocab = tokenizer.get_vocab()
    norm, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
    added: list[str] = []
    seen: set[str] = set()
    for word in words:
        text = norm.normalize_str(word) if norm is not None else word
        parts = pre.pre_tokenize_str(text) if pre is not None else [(text, (0, len(text)))]
        if len(parts) != 1:
            continue
        token = parts[0][0]
        if token in vocab or token in seen:
            continue
        seen.add(token)
        added.append(token)
    if not added:
        return tokenizer, []
    data = json.loads(tokenizer.to_str())
    start = max(vocab.values()) + 1
    data["model"]["vocab"].update({t: start + i for i, t in enumerate(added)})
    extended = Tokenizer.from_str(json.dumps(data))
    return extended, added


def pca(x: np.ndarray, dims: int, fit_rows: np.ndarray) -> np.ndarray:
    """Project ``x`` onto the top ``dims`` principal components of ``x[fit_rows]`` (centred on
    their mean), each component's sign fixed so its largest score is positive: Model2Vec's
    ``apply_pca``, fitted on the kept tokens only."""
    fit = x[fit_rows].astype(np.float64)
    mean = fit.mean(axis=0)
    centred = fit - mean
    cov = centred.T @ centred / max(1, len(fit) - 1)
    _, vecs = np.linalg.eigh(cov)
    comps = vecs[:, ::-1][:, :dims]
    scores = (x.astype(np.float64) - mean) @ comps
    fit_scores = scores[fit_rows]
    signs = np.sign(fit_scores[np.abs(fit_scores).argmax(axis=0), np.arange(comps.shape[1])])
    signs[signs == 0] = 1.0
    return scores * signs


def sif_weights(n: int, coefficient: float) -> np.ndarray:
    """SIF weight ``a / (a + p)`` for ranks ``0..n-1``, with ``p`` a Zipf estimate of the
    token's frequency from its rank (Model2Vec's ``compute_weights``)."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    proba = inv_rank / inv_rank.sum()
    return coefficient / (coefficient + proba)


def distill_vectors(
    tokenizer: Any,
    run_model: Callable[[np.ndarray], np.ndarray],
    *,
    pca_dims: int | None = PCA_DIMS,
    sif_coefficient: float | None = SIF_COEFFICIENT,
    vocab_limit: int | None = None,
    added: Sequence[Sequence[int]] = (),
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """One float32 row per token id of ``tokenizer``: ``run_model`` maps a batch of token-id
    rows ``[CLS] id [SEP]`` to their last hidden states. Tokens never distilled (``[unusedN]``
    and, with ``vocab_limit``, every kept token past the first ``vocab_limit`` by id) get a
    zero row, so they add nothing to a string's mean. ``pca_dims=None`` keeps the hidden
    states as they are (no centring, no projection); ``sif_coefficient=None`` weighs every
    token alike. ``added`` are the rows of tokens past the tokenizer's vocabulary (see
    :func:`extend_tokenizer`), each the original tokenizer's ids ``[CLS] pieces [SEP]`` of a
    word: its vector is the mean over those positions, as MiniLM embeds the word alone, and
    it ranks after every other token for SIF, as in Model2Vec."""
    vocab = tokenizer.get_vocab()
    base = max(vocab.values()) + 1
    n = base + len(added)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise EmbedderError("static embedder: the tokenizer has no [CLS]/[SEP] tokens")
    unused = {i for t, i in vocab.items() if _UNUSED.fullmatch(t)}
    kept = np.array([i for i in range(base) if i not in unused], dtype=np.int64)
    if vocab_limit is not None:
        kept = kept[:vocab_limit]
    kept = np.concatenate([kept, np.arange(base, n, dtype=np.int64)])
    if pca_dims is not None and len(kept) <= pca_dims:
        raise EmbedderError(f"static embedder: {len(kept)} tokens cannot give {pca_dims} "
                            "PCA dimensions")
    hidden: np.ndarray | None = None
    single = kept[kept < base]
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(single), _DISTILL_BATCH):
        ids = single[start:start + _DISTILL_BATCH]
        batches.append((ids, np.stack([np.full_like(ids, cls_id), ids,
                                       np.full_like(ids, sep_id)], axis=1)))
    by_length: dict[int, list[int]] = {}
    for j, row in enumerate(added):  # equal lengths per batch: no padding, no mask
        by_length.setdefault(len(row), []).append(j)
    for length, js in sorted(by_length.items()):
        for start in range(0, len(js), max(1, _DISTILL_BATCH * 3 // length)):
            part = js[start:start + max(1, _DISTILL_BATCH * 3 // length)]
            batches.append((base + np.array(part, dtype=np.int64),
                            np.array([added[j] for j in part], dtype=np.int64)))
    done = 0
    for ids, rows in batches:
        h = np.asarray(run_model(rows), dtype=np.float32)
        if hidden is None:
            hidden = np.zeros((n, h.shape[-1]), dtype=np.float32)
        hidden[ids] = h.mean(axis=1)  # mean pooling: every position of the row is real
        done += len(ids)
        if progress is not None:
            progress(done, len(kept))
    assert hidden is not None
    reduced = hidden if pca_dims is None else pca(hidden, pca_dims, kept)
    out = np.zeros((n, reduced.shape[1]), dtype=np.float32)
    weights = np.ones(len(kept)) if sif_coefficient is None else sif_weights(len(kept),
                                                                             sif_coefficient)
    out[kept] = reduced[kept] * weights[:, None]
    return out


class StaticMiniLM:
    """The static model distilled from all-MiniLM-L6-v2 (int8 ONNX).

    The first use distils the vectors (about 25 s on two cores) into ``cache_dir``; later
    uses load them. ``name`` hashes the source model and tokenizer checksums and every
    distillation setting, so vectors from another recipe never share cache entries, and a
    run switching to or from this embedder re-embeds and re-clusters. ``vocab_limit``
    distils only the first N tokens by id (for quick trials and tests; the others embed as
    nothing). ``pca_dims=None``, ``sif_coefficient=None`` and ``vocabulary`` (words to add
    as whole tokens, see :func:`extend_tokenizer`) are the other recipes compared in
    ``bench/quality.py`` and ``bench/embed.py --compare``; none beat the default on the
    planted benchmark at every size tried, so the default stays Model2Vec's own.
    """

    def __init__(
        self,
        *,
        pca_dims: int | None = PCA_DIMS,
        sif_coefficient: float | None = SIF_COEFFICIENT,
        vocab_limit: int | None = None,
        vocabulary: Sequence[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        quiet: bool = False,
    ) -> None:
        if pca_dims is not None and not 0 < pca_dims <= _HIDDEN:
            raise EmbedderError(f"static embedder: pca_dims must be between 1 and {_HIDDEN}, "
                                "or None for no PCA")
        if sif_coefficient is not None and not 0 < sif_coefficient < 1:
            raise EmbedderError("static embedder: sif_coefficient must be between 0 and 1, "
                                "or None for no weighting")
        try:
            from model2vec import StaticModel
        except ImportError as e:
            raise EmbedderError("the static embedder needs the package model2vec "
                                "(pip install model2vec)") from e
        tok_path = default_tokenizer_path()
        verify_file(tok_path, TOKENIZER_SHA256, "tokenizer file")
        original = _load_tokenizer(tok_path)
        tokenizer, added = extend_tokenizer(original, vocabulary or ())
        recipe: dict[str, Any] = {"source": MODEL_SHA256, "tokenizer": TOKENIZER_SHA256,
                                  "pca_dims": pca_dims, "sif": sif_coefficient,
                                  "vocab_limit": vocab_limit, "recipe": RECIPE_VERSION}
        if added:  # only then, so the names of recipes without additions stay as they were
            recipe["added"] = hashlib.sha256("\n".join(added).encode()).hexdigest()
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        self.dim = _HIDDEN if pca_dims is None else pca_dims
        self.name = f"static-minilm-d{self.dim}@{digest}"
        self._pca_dims, self._sif, self._vocab_limit = pca_dims, sif_coefficient, vocab_limit
        self._threads = threads
        self._quiet = quiet
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = folder / f"{self.name}.npy"
        self.added = added
        vectors = self._load() if self.path.is_file() else None
        if vectors is None or vectors.shape != (tokenizer.get_vocab_size(), self.dim):
            vectors = self._distill(original, [original.encode(t).ids for t in added])
        self._unk = tokenizer.token_to_id("[UNK]")
        self._model = StaticModel(vectors=vectors, tokenizer=tokenizer, normalize=True,
                                  max_length=_MAX_LENGTH)

    def __repr__(self) -> str:
        return f"StaticMiniLM(name={self.name!r}, path={str(self.path)!r})"

    def _load(self) -> np.ndarray | None:
        """The cached vectors, or None when the file is unreadable (then distil again)."""
        try:
            x = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if x.dtype != np.float32 or x.ndim != 2 or not np.isfinite(x).all():
            return None
        return np.asarray(x)

    def _distill(self, tokenizer: Any, added: list[list[int]]) -> np.ndarray:
        """Distil from the ONNX MiniLM and write the result atomically to ``self.path``."""
        model = default_model_path()
        verify_file(model, MODEL_SHA256, "ONNX model file")
        session = load_session(model, self._threads or usable_cores())
        names = {i.name for i in session.get_inputs()}

        def run_model(rows: np.ndarray) -> np.ndarray:
            feeds = {"input_ids": rows, "attention_mask": np.ones_like(rows)}
            if "token_type_ids" in names:
                feeds["token_type_ids"] = np.zeros_like(rows)
            return np.asarray(session.run(None, feeds)[0])

        def progress(done: int, total: int) -> None:
            if not self._quiet and (done == total or done % (_DISTILL_BATCH * 20) == 0):
                end = "\n" if done == total else ""
                print(f"\rdistilling the static embedder from MiniLM (once): {done}/{total} "
                      "tokens", end=end, file=sys.stderr, flush=True)

        vectors = distill_vectors(tokenizer, run_model, pca_dims=self._pca_dims,
                                  sif_coefficient=self._sif, vocab_limit=self._vocab_limit,
                                  added=added, progress=progress)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, suffix=".tmp",
                                             delete=False) as f:
                np.save(f, vectors, allow_pickle=False)
            os.replace(f.name, self.path)
        except OSError as e:  # a read-only home still gets a working embedder
            print(f"static embedder: could not save the distilled vectors to {self.path}: {e}",
                  file=sys.stderr)
        return vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in order. A string with no known token (empty, or only characters
        outside the vocabulary) would have no vector; it gets the ``[UNK]`` token's."""
        n = len(texts)
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        x = np.asarray(self._model.encode(list(texts), use_multiprocessing=False),
                       dtype=np.float32)
        x = np.ascontiguousarray(x.reshape(n, self.dim))
        empty = np.linalg.norm(x, axis=1) < 1e-12
        if empty.any():
            x[empty] = self._model.embedding[self._unk]
        return check_output(l2_normalize(x), n, self.dim, self.name)
