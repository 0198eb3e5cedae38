"""The static (Model2Vec) embedder, distilled from the real int8 MiniLM.

Distilling the whole 30k-token vocabulary takes about half a minute on two cores, so these
tests distil the first 5,000 tokens (the special tokens, single characters and the ~4,000
commonest words) once per session; every word below is among them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featdisco.embedders import EmbedderError, make_embedder
from featdisco.embedders.onnx_minilm import OnnxMiniLM
from featdisco.embedders.static import StaticMiniLM, default_cache_dir
from featdisco.stages.embed import EmbedStats, embed_distinct
from featdisco.storage.embed_cache import EmbeddingCache

pytest.importorskip("model2vec")

LIMIT = 5000
TOPICS = [
    ("soldiers fight in the war", "the army went to war"),
    ("the ship is on the sea", "a boat on the ocean water"),
    ("rain in the weather tomorrow", "the weather will be rain"),
    ("ask a doctor or a lawyer for help", "a lawyer and a doctor can help"),
    ("cook dinner and eat the food", "food to eat for dinner"),
    ("write a computer program", "the code of the program"),
]


@pytest.fixture(scope="session")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("static")


@pytest.fixture(scope="session")
def static(static_dir: Path) -> StaticMiniLM:
    return StaticMiniLM(vocab_limit=LIMIT, cache_dir=static_dir, quiet=True)


def test_same_topic_ranks_above_other_topics(static: StaticMiniLM) -> None:
    a = static.embed([t[0] for t in TOPICS])
    b = static.embed([t[1] for t in TOPICS])
    sims = a @ b.T
    for i in range(len(TOPICS)):
        assert sims[i, i] > np.delete(sims[i], i).max(), (TOPICS[i], sims[i])


def test_common_tokens_weigh_little(static: StaticMiniLM) -> None:
    """SIF weighting: an article barely moves a phrase, so it cannot pull two phrases about
    different things together (an unweighted mean of 'a ship' and 'a war' is half 'a')."""
    x = static.embed(["a ship", "ship", "a war", "war"])
    assert x[0] @ x[1] > 0.95 and x[2] @ x[3] > 0.95
    assert x[0] @ x[2] < 0.5


def test_rows_unit_norm_float32_in_order_batch_free(static: StaticMiniLM) -> None:
    texts = ["the war", "", "\u2603\u2603", "the war", "a boat on the ocean water " * 200]
    x = static.embed(texts)
    assert x.dtype == np.float32 and x.shape == (5, 256)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)  # empty ones too
    np.testing.assert_array_equal(x[0], x[3])
    np.testing.assert_allclose(x, np.vstack([static.embed([t]) for t in texts]), atol=1e-6)
    assert static.embed([]).shape == (0, 256)


def test_distils_once_then_loads_from_the_cache(static: StaticMiniLM, static_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert static.path.parent == static_dir and static.path.is_file()

    def no_model(*_a: object, **_k: object) -> None:
        raise AssertionError("distilled again instead of loading the cache")

    monkeypatch.setattr("featdisco.embedders.static.load_session", no_model)
    again = StaticMiniLM(vocab_limit=LIMIT, cache_dir=static_dir, quiet=True)
    texts = [t[0] for t in TOPICS]
    np.testing.assert_array_equal(again.embed(texts), static.embed(texts))


def test_a_corrupt_cache_file_is_distilled_again(tmp_path: Path) -> None:
    first = StaticMiniLM(vocab_limit=600, cache_dir=tmp_path, quiet=True)
    expected = first.embed(["the war", "a boat"])
    first.path.write_bytes(b"not an array" * 100)
    again = StaticMiniLM(vocab_limit=600, cache_dir=tmp_path, quiet=True)
    np.testing.assert_allclose(again.embed(["the war", "a boat"]), expected, atol=1e-6)
    assert np.load(again.path).shape == (30522, 256)


def test_name_pins_the_recipe_and_the_registry_builds_it(static: StaticMiniLM,
                                                         static_dir: Path) -> None:
    assert static.name.startswith("static-minilm-d256@")
    e = make_embedder("static", vocab_limit=LIMIT, cache_dir=static_dir, quiet=True)
    assert isinstance(e, StaticMiniLM) and e.name == static.name and e.dim == 256
    with pytest.raises(EmbedderError, match="pca_dims"):
        make_embedder("static", pca_dims=0)
    with pytest.raises(EmbedderError, match="no option colour"):
        make_embedder("static", colour="red")


def test_names_differ_by_recipe(static_dir: Path) -> None:
    """Every setting enters the name, hence every cache key and the run's identity."""
    a = StaticMiniLM(vocab_limit=600, cache_dir=static_dir, quiet=True)
    b = StaticMiniLM(vocab_limit=600, pca_dims=128, cache_dir=static_dir, quiet=True)
    assert a.name != b.name and b.dim == 128 and b.embed(["the war"]).shape == (1, 128)
    assert a.path != b.path


def test_switching_embedder_never_reuses_the_other_models_vectors(
        tmp_path: Path, static: StaticMiniLM, minilm: OnnxMiniLM) -> None:
    texts = ["the army went to war", "a boat on the ocean water", "the army went to war"]
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        embed_distinct(texts, minilm, cache)
        st = EmbedStats()
        vectors, inverse = embed_distinct(texts, static, cache, stats=st)
    assert st.cached == 0 and st.embedded == 2 and vectors.shape == (2, 256)
    np.testing.assert_allclose(vectors[inverse], static.embed(texts), atol=1e-6)


def test_default_cache_dir_follows_the_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATDISCO_EMBEDDERS_DIR", str(tmp_path / "vecs"))
    assert default_cache_dir() == tmp_path / "vecs"
    monkeypatch.delenv("FEATDISCO_EMBEDDERS_DIR")
    assert default_cache_dir().name == "embedders"


def test_without_pca_or_sif_a_word_is_minilm_reading_that_word(tmp_path: Path,
                                                               minilm: OnnxMiniLM) -> None:
    """``pca_dims=None, sif_coefficient=None`` keeps MiniLM's own 384-d space: a one-token
    string embeds exactly as MiniLM embeds it (the distillation reads ``[CLS] w [SEP]`` with
    MiniLM's mean pooling), so nothing but the static mean separates the two models."""
    raw = StaticMiniLM(pca_dims=None, sif_coefficient=None, vocab_limit=1200,
                       cache_dir=tmp_path, quiet=True)
    assert raw.dim == 384 and raw.name.startswith("static-minilm-d384@")
    words = ["war", "the", "and"]
    np.testing.assert_allclose(raw.embed(words), minilm.embed(words), atol=2e-3)
    default = StaticMiniLM(vocab_limit=1200, cache_dir=tmp_path, quiet=True)
    assert default.dim == 256 and raw.name != default.name
    with pytest.raises(EmbedderError, match="pca_dims"):
        StaticMiniLM(pca_dims=385, cache_dir=tmp_path)
    with pytest.raises(EmbedderError, match="sif_coefficient"):
        StaticMiniLM(sif_coefficient=1.5, cache_dir=tmp_path)


def test_vocabulary_additions_give_split_words_their_own_vector(tmp_path: Path,
                                                                minilm: OnnxMiniLM) -> None:
    """A word MiniLM's WordPiece splits ('rhyming' is r ##hy ##ming) embeds, without the
    addition, as the mean of its pieces, far from what MiniLM makes of the word; added to
    the vocabulary it gets the vector MiniLM gives the whole word. Words the vocabulary
    already has, repeats and multi-word entries are not added; the additions enter the name."""
    kw = {"pca_dims": None, "sif_coefficient": None, "vocab_limit": 1200,
          "cache_dir": tmp_path, "quiet": True}
    plain = StaticMiniLM(**kw)  # type: ignore[arg-type]
    extended = StaticMiniLM(vocabulary=["Rhyming", "war", "rhyming", "user's"],
                            **kw)  # type: ignore[arg-type]
    assert extended.added == ["rhyming"] and extended.name != plain.name
    target = minilm.embed(["rhyming"])[0]
    assert float(plain.embed(["rhyming"])[0] @ target) < 0.9
    np.testing.assert_allclose(extended.embed(["Rhyming"])[0], target, atol=2e-3)
    np.testing.assert_allclose(extended.embed(["war"]), plain.embed(["war"]), atol=1e-6)
    again = StaticMiniLM(vocabulary=["rhyming"], **kw)  # type: ignore[arg-type]
    assert again.name == extended.name and again.path.is_file()
