"""Run-directory building blocks that stages stream through: the incremental table hash
and the all-or-nothing Parquet writer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunLock


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"p{i}" for i in range(n)], "kind": ["user", "thought"] * (n // 2),
                     "n": list(range(n))})


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """Another process that takes the run directory and keeps it."""
    code = ("import sys, time; from pathlib import Path; from featdisco.rundir import RunLock; "
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
    # within one process the lock is re-entrant: a command that took it (open_run) hands
    # the run to a pipeline or an analysis that takes it again
    inner = RunLock(tmp_path)
    inner.acquire()
    inner.release()
    assert RunLock(tmp_path).holder() is None  # this process's own hold is not "another process"
    lock.release()
    other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from featdisco.rundir import RunLock; RunLock(Path(sys.argv[1])).acquire()",
                            str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr  # released by the last holder: free for others
