"""Run-directory building blocks that stages stream through: the incremental table hash
and the all-or-nothing Parquet writer."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featdisco.errors import FeatdiscoError
from featdisco.run import RunDir, RunLock, TableHasher, table_hash


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


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process that takes the run directory and keeps it."""
    code = ("import sys, time; from pathlib import Path; from featdisco.run import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_one_process_at_a_time_and_a_killed_one_never_blocks(tmp_path: Path) -> None:
    assert RunLock(tmp_path).holder() is None
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(FeatdiscoError, match=f"another featdisco process \\(pid {holder.pid}\\)"):
            RunLock(tmp_path).acquire()
        assert RunLock(tmp_path).holder() == str(holder.pid)  # what `featdisco status` shows
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # what the killed process was writing, and a finished artefact beside it
    (tmp_path / f".features.parquet.tmp-{holder.pid}").write_bytes(b"half")
    (tmp_path / "pieces.parquet").write_bytes(b"whole")
    assert RunLock(tmp_path).holder() is None
    lock = RunLock(tmp_path)
    lock.acquire()  # the kernel dropped the dead process's lock
    assert not list(tmp_path.glob(".*.tmp-*")) and (tmp_path / "pieces.parquet").exists()
    lock.acquire()  # again from the holder: nothing changes
    with pytest.raises(FeatdiscoError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()  # a second Pipeline in this same process is refused too
    lock.release()
    RunLock(tmp_path).acquire()
