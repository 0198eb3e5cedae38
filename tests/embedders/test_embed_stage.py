"""embed_distinct: de-duplication, the on-disk cache, resuming after a crash, matrix files."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from featdisco.embedders import EmbedderError
from featdisco.embedders.onnx_minilm import OnnxMiniLM
from featdisco.stages.embed import EmbedStats, embed_distinct, embed_into
from featdisco.storage.embed_cache import EmbeddingCache, text_key
from featdisco.storage.matrix import NpyWriter, load_matrix, read_rows, save_matrix

from .conftest import CountingEmbedder, embed_rows

FEATURES = ["Uses markdown", "Bullet points", "Polite tone", "Uses markdown", "Emojis",
            "Bullet points", "Uses markdown", "Self-corrects", "In Mandarin", "Polite tone",
            "Backtracks", "Uses markdown", "Hallucinates a tool call", "Émojis 🙂", ""]


def test_each_distinct_string_embedded_once_rows_aligned(counting: CountingEmbedder,
                                                         minilm: OnnxMiniLM) -> None:
    stats = EmbedStats()
    x = embed_rows(FEATURES, counting, batch_size=4, stats=stats)
    distinct = list(dict.fromkeys(FEATURES))
    assert sorted(counting.texts) == sorted(distinct)
    assert counting.calls == -(-len(distinct) // 4)
    assert (stats.texts, stats.distinct, stats.embedded, stats.cached) == (15, 10, 10, 0)
    ref = minilm.embed(FEATURES)
    assert x.shape == (15, 384) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_cached_equals_uncached_and_rerun_hits_cache(tmp_path: Path, minilm: OnnxMiniLM) -> None:
    plain = embed_rows(FEATURES, minilm, batch_size=3)
    first = CountingEmbedder(minilm)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        cold = embed_rows(FEATURES, first, cache, batch_size=3)
    assert first.calls > 0
    again = CountingEmbedder(minilm)
    stats = EmbedStats()
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:  # reopened: really on disk
        warm = embed_rows(FEATURES, again, cache, batch_size=3, stats=stats)
        assert cache.count(minilm.name) == 10 and cache.count("other") == 0
    assert again.calls == 0 and stats.cached == 10 and stats.embedded == 0
    np.testing.assert_allclose(cold, plain, atol=1e-5)
    np.testing.assert_array_equal(warm, cold)


def test_only_new_strings_reach_the_embedder(tmp_path: Path, minilm: OnnxMiniLM) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        embed_rows(FEATURES[:6], minilm, cache)
        spy = CountingEmbedder(minilm)
        x = embed_rows(FEATURES, spy, cache)
    assert sorted(spy.texts) == sorted(set(FEATURES) - set(FEATURES[:6]))
    np.testing.assert_allclose(x, minilm.embed(FEATURES), atol=1e-5)


def test_crash_mid_run_keeps_finished_batches(tmp_path: Path, minilm: OnnxMiniLM) -> None:
    path = tmp_path / "c.sqlite"
    crashing = CountingEmbedder(minilm, fail_after=2)
    with EmbeddingCache(path) as cache, pytest.raises(RuntimeError, match="simulated"):
        embed_rows(FEATURES, crashing, cache, batch_size=3)
    with EmbeddingCache(path) as cache:
        assert cache.count(minilm.name) == 6  # two whole batches, nothing half-written
        resumed = CountingEmbedder(minilm)
        x = embed_rows(FEATURES, resumed, cache, batch_size=3)
    assert len(resumed.texts) == 4 and not set(resumed.texts) & set(crashing.texts)
    np.testing.assert_allclose(x, minilm.embed(FEATURES), atol=1e-5)


def test_cache_separates_models_and_checks_dim(tmp_path: Path) -> None:
    keys = [text_key(t) for t in ("a", "b", "c")]
    x = np.eye(3, 4, dtype=np.float32)
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put("m1", keys[:2], x[:2])
        found, rows = cache.get("m1", 4, keys[::-1])
        assert found.tolist() == [False, True, True]
        np.testing.assert_array_equal(rows, x[[1, 0]])
        assert not cache.get("m2", 4, keys)[0].any()
        with pytest.raises(EmbedderError, match="4-d vectors for 'm1'"):
            cache.get("m1", 8, keys)


def test_unreadable_cache_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EmbedderError, match="unreadable"):
        EmbeddingCache(bad)


def test_bad_embedder_output_is_caught(minilm: OnnxMiniLM) -> None:
    class Short(CountingEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            return super().embed(texts)[:-1]

    with pytest.raises(EmbedderError, match="returned shape"):
        embed_rows(["a", "b"], Short(minilm))


def test_distinct_rows(minilm: OnnxMiniLM) -> None:
    vecs, inv = embed_distinct(FEATURES, minilm)
    assert vecs.shape == (10, 384) and inv.tolist()[:4] == [0, 1, 2, 0]
    np.testing.assert_allclose(np.linalg.norm(vecs[inv], axis=1), 1.0, atol=1e-5)


def test_matrix_roundtrip_memmapped(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((50, 7))
    p = save_matrix(tmp_path / "run" / "emb.npy", x)
    m = load_matrix(p)
    assert isinstance(m, np.memmap) and m.dtype == np.float32 and not m.flags.writeable
    np.testing.assert_array_equal(m, x.astype(np.float32))
    assert not (tmp_path / "run" / "emb.npy.tmp").exists()
    assert type(load_matrix(p, mmap=False)) is np.ndarray
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(2, 3))
    with pytest.raises(EmbedderError, match="not a float32 matrix"):
        load_matrix(tmp_path / "ints.npy")


def test_cache_is_sqlite_wal(tmp_path: Path, minilm: OnnxMiniLM) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        embed_rows(["x"], minilm, cache)
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (blob,) = db.execute("SELECT vector FROM vectors").fetchone()
    assert len(blob) == 384 * 4


def test_batches_follow_the_backends_token_lengths() -> None:
    class Ranked:
        """A toy backend whose 'token length' ranks strings against their character
        length, to show the stage orders by the backend's count when it has one."""

        name, dim = "toy", 2

        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def token_lengths(self, texts: Sequence[str]) -> list[int]:
            return [100 - len(t) for t in texts]

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            self.batches.append(list(texts))
            return np.tile(np.array([0.6, 0.8], dtype=np.float32), (len(texts), 1))

    toy = Ranked()
    texts = ["a", "bbbb", "cc", "ddddd", "eee", "bbbb"]
    x = embed_rows(texts, toy, batch_size=2)
    assert toy.batches == [["ddddd", "bbbb"], ["eee", "cc"], ["a"]]
    assert x.shape == (6, 2)


def test_npy_writer_streams_rows_into_place_and_resumes_from_cache(tmp_path: Path,
                                                                  minilm: OnnxMiniLM) -> None:
    """The run's matrix is written batch by batch to disk, never held whole: the file reads
    back exactly as the in-memory result, and a crash leaves no half-written matrix."""
    distinct = list(dict.fromkeys(FEATURES))
    ref, _ = embed_distinct(distinct, minilm)
    path = tmp_path / "embeddings.npy"
    crashing = CountingEmbedder(minilm, fail_after=1)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        w = NpyWriter(path, len(distinct), 384)
        with pytest.raises(RuntimeError, match="simulated crash"):
            embed_into(distinct, crashing, w, cache, batch_size=3)
        w.abort()
    assert not path.exists() and not (tmp_path / "embeddings.npy.tmp").exists()
    again = CountingEmbedder(minilm)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        w = NpyWriter(path, len(distinct), 384)
        embed_into(distinct, again, w, cache, batch_size=3)
        w.commit()
    assert len(again.texts) == len(distinct) - 3  # the first batch came from the cache
    np.testing.assert_allclose(load_matrix(path), ref, atol=1e-6)


def test_npy_writer_refuses_a_matrix_with_rows_never_written(tmp_path: Path) -> None:
    w = NpyWriter(tmp_path / "m.npy", 4, 2)
    w.write(np.array([3, 0]), np.ones((2, 2), np.float32))
    with pytest.raises(EmbedderError, match="2 of 4 rows"):
        w.commit()
    assert not (tmp_path / "m.npy").exists() and not (tmp_path / "m.npy.tmp").exists()


def test_read_rows_matches_fancy_indexing(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1000, 5)).astype(np.float32)
    p = save_matrix(tmp_path / "m.npy", x)
    rows = np.random.default_rng(1).integers(0, 1000, 300)  # unsorted, with repeats
    np.testing.assert_array_equal(read_rows(p, rows, chunk_rows=64), x[rows])
    np.testing.assert_array_equal(read_rows(p, np.arange(1000)), x)
    assert read_rows(p, np.zeros(0, np.int64)).shape == (0, 5)
    with pytest.raises(IndexError):
        read_rows(p, np.array([1000]))
