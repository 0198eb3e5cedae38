"""The default embedder on the real int8 all-MiniLM-L6-v2 model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featdisco.embedders import EmbedderError, make_embedder
from featdisco.embedders.onnx_minilm import OnnxMiniLM, OnnxMiniLMQ8, default_model_path

PARAPHRASES = [
    ("Uses markdown formatting with headers", "The answer is formatted in Markdown with headings"),
    ("Apologises to the user", "The assistant says sorry to the user"),
    ("Responds in Mandarin Chinese", "The reply is written in Chinese"),
    ("Writes Python code to sort a list", "Provides a Python function that sorts a list"),
    ("Refuses to help with making a weapon", "Declines a request to build a weapon"),
    ("The cat sat on the mat", "A cat was sitting on the rug"),
    ("Backtracks and corrects an earlier mistake", "Realises its previous step was wrong and fixes it"),
    ("Mentions the weather forecast for tomorrow", "Talks about whether it will rain tomorrow"),
]


def test_paraphrases_rank_above_unrelated(minilm: OnnxMiniLM) -> None:
    a = minilm.embed([p[0] for p in PARAPHRASES])
    b = minilm.embed([p[1] for p in PARAPHRASES])
    sims = a @ b.T
    for i in range(len(PARAPHRASES)):
        others = np.delete(sims[i], i)
        assert sims[i, i] > others.max(), (PARAPHRASES[i], sims[i])
    assert np.diag(sims).mean() > 0.6 > np.median(sims[~np.eye(len(sims), dtype=bool)])


def test_rows_unit_norm_float32_in_order(minilm: OnnxMiniLM) -> None:
    texts = ["Short", "", "A much longer sentence about something else entirely " * 3, "Short"]
    x = minilm.embed(texts)
    assert x.dtype == np.float32 and x.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x[0], x[3], atol=1e-6)  # order kept through length sorting
    assert float(x[0] @ x[2]) < 0.99
    assert minilm.embed([]).shape == (0, 384)


def test_batch_size_does_not_change_vectors(minilm: OnnxMiniLM, shared_data: Path) -> None:
    lines = (shared_data / "mt_bench" / "question.jsonl").read_text().splitlines()[:24]
    texts = [json.loads(line)["turns"][0] for line in lines] + ["Bullet points", "Polite tone"]
    ref = OnnxMiniLM(batch_size=1).embed(texts)
    for bs in (3, 64):
        np.testing.assert_allclose(OnnxMiniLM(batch_size=bs).embed(texts), ref, atol=1e-5)
    np.testing.assert_allclose(minilm.embed(texts), ref, atol=1e-5)


def test_truncates_at_256_tokens(minilm: OnnxMiniLM) -> None:
    # "apple" is one word piece: 254 of them plus [CLS] and [SEP] fill the window exactly,
    # so anything after them is cut off and cannot change the vector.
    base = "apple " * 254
    x = minilm.embed([base, base + "zebra " * 50, "apple " * 100])
    np.testing.assert_allclose(x[0], x[1], atol=1e-6)
    assert float(x[0] @ x[2]) < 1 - 1e-4  # a shorter text does differ


def test_checksum_rejects_corrupted_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), bad)
    with open(bad, "r+b") as f:  # flip one byte in the middle of the weights
        f.seek(10_000_000)
        byte = f.read(1)
        f.seek(10_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EmbedderError, match=r"sha256 [0-9a-f]{64}, expected 8199be6f"):
        OnnxMiniLM(model_path=bad)
    with pytest.raises(EmbedderError, match="not found"):
        OnnxMiniLM(model_path=tmp_path / "missing.onnx")


def test_registry() -> None:
    e = make_embedder(None, batch_size=8)
    assert isinstance(e, OnnxMiniLMQ8) and e.batch_size == 8  # the default: minilm-q8
    assert make_embedder("minilm-q8").name == e.name
    m = make_embedder("minilm")
    assert type(m) is OnnxMiniLM and m.name.startswith("all-MiniLM-L6-v2-int8-onnx@8199be6f")
    with pytest.raises(EmbedderError, match="unknown embedder 'bert'"):
        make_embedder("bert")
    with pytest.raises(EmbedderError, match="unknown embedder"):
        make_embedder("st:")
    with pytest.raises(EmbedderError, match="no option colour"):
        make_embedder("minilm", colour="red")


def test_q8_is_minilm_with_int8_matmuls(minilm: OnnxMiniLM, tmp_path: Path) -> None:
    """minilm-q8 is derived from the same file: its vectors stay close to MiniLM's and
    keep the paraphrase ranking, under a name of its own (no shared cache entries)."""
    q8 = make_embedder("minilm-q8", cache_dir=tmp_path)
    assert isinstance(q8, OnnxMiniLMQ8) and q8.name.startswith("all-MiniLM-L6-v2-q8-onnx@")
    assert q8.name != minilm.name
    texts = [t for pair in PARAPHRASES for t in pair]
    cos = (q8.embed(texts) * minilm.embed(texts)).sum(axis=1)
    assert cos.min() > 0.95 and cos.mean() > 0.98, cos
    keep = make_embedder("minilm-q8", cache_dir=tmp_path, float_ffn_out=True)  # the other recipe
    assert keep.name != q8.name and len(list(tmp_path.glob("*.onnx"))) == 2
    test_paraphrases_rank_above_unrelated(q8)  # type: ignore[arg-type]


def test_q8_derived_once_and_redone_when_damaged(tmp_path: Path) -> None:
    first = make_embedder("minilm-q8", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.onnx")
    assert not list(tmp_path.glob(".q8-*"))  # no temporary folder left behind
    stamp = path.stat().st_mtime_ns
    assert make_embedder("minilm-q8", cache_dir=tmp_path).name == first.name
    assert path.stat().st_mtime_ns == stamp  # reused, not derived again
    with open(path, "r+b") as f:  # damage the derived copy
        f.seek(path.stat().st_size // 2)
        f.write(b"\0" * 64)
    again = make_embedder("minilm-q8", cache_dir=tmp_path)
    assert again.name == first.name  # derived afresh: the same file as before
