"""Run-directory building blocks that stages stream through: the incremental table hash
and the all-or-nothing Parquet writer."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featdisco.run import RunDir, TableHasher, table_hash


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"p{i}" for i in range(n)], "kind": ["user", "thought"] * (n // 2),
                     "n": list(range(n))})


def test_streamed_hash_equals_the_whole_tables_hash_however_it_is_cut() -> None:
    table = _table(150_000)  # over two of the hasher's 65,536-row blocks
    whole = table_hash(table, ["id", "kind"])
    rng = random.Random(7)
    for _ in range(3):
        h, start = TableHasher(["id", "kind"]), 0
        while start < table.num_rows:
            size = rng.choice([1, 999, 65_535, 65_537, 40_000])
            h.update(table.slice(start, size).to_batches()[0])
            start += size
        assert h.hexdigest() == whole
    # and it still sees every row and column it hashes
    changed = table.set_column(0, "id", pa.array([*table.column("id").to_pylist()[:-1], "x"]))
    assert table_hash(changed, ["id", "kind"]) != whole
    assert table_hash(table, ["id"]) != whole
    assert table_hash(table.set_column(2, "n", pa.array([0] * 150_000)), ["id", "kind"]) == whole


def test_an_aborted_writer_leaves_the_previous_artefact(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_table("pieces.parquet", _table(10))
    writer = run.table_writer("pieces.parquet", _table(2).schema)
    with pytest.raises(RuntimeError):
        try:
            writer.write(_table(4))
            raise RuntimeError("the stage failed midway")
        finally:
            writer.abort()
    assert pq.read_table(tmp_path / "pieces.parquet").equals(_table(10))
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []
    writer = run.table_writer("pieces.parquet", _table(2).schema)
    for part in (_table(4), _table(6).slice(4)):
        writer.write(part)
    writer.commit()
    writer.abort()  # after commit: nothing to undo
    assert pq.read_table(tmp_path / "pieces.parquet").num_rows == 6 and writer.rows == 6
