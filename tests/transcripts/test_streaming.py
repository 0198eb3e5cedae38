"""JSON documents are streamed (issue 13, item 5): an array, a wrapper object's list and an
Inspect log's samples are read a record at a time, so memory does not grow with the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import featdisco
from featdisco.transcripts.sources import iter_raw

REC = {"model": "m", "messages": [{"role": "user", "content": "q " * 40},
                                  {"role": "assistant", "content": "a " * 200}]}

MEASURE = """
import resource, sys
from pathlib import Path
from featdisco.transcripts.sources import iter_raw
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = sum(1 for r in iter_raw(Path(sys.argv[1])) if r.data is not None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, (after - before) * 1024)
"""


def write_big(path: Path, n: int, wrapper: str | None) -> int:
    with path.open("wb") as f:
        f.write(b'{"meta": {"n": %d}, "%s": [' % (n, wrapper.encode()) if wrapper else b"[")
        for i in range(n):
            f.write((b",\n" if i else b"") + json.dumps({"id": f"r{i}", **REC}).encode())
        f.write(b"]}" if wrapper else b"]")
    return path.stat().st_size


def peak_growth(path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_a_big_array_and_a_wrapper_are_read_a_record_at_a_time(tmp_path: Path) -> None:
    for name, wrapper in (("array.json", None), ("wrapped.json", "data")):
        size = write_big(tmp_path / name, 40_000, wrapper)
        assert size > 20e6
        n, growth = peak_growth(tmp_path / name)
        assert n == 40_000
        # Read whole, a document costs several times its size; streamed, a few MB.
        assert growth < size / 4, (name, size, growth)


def test_wrapper_inspect_and_single_object_documents(tmp_path: Path) -> None:
    recs = [{"id": f"c{i}", **REC} for i in range(3)]
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"version": 2, "records": recs}, indent=2))
    assert [r.where for r in iter_raw(wrapped)] == ["record 1", "record 2", "record 3"]
    single = tmp_path / "one.json"
    single.write_text(json.dumps(recs[0], indent=2))
    assert [r.data["id"] for r in iter_raw(single) if r.data] == ["c0"]
    log = {"version": 2, "status": "success", "eval": {"task": "t", "model": "m"},
           "samples": [{"id": 1, "epoch": 1, "messages": REC["messages"]}]}
    (tmp_path / "log.json").write_text(json.dumps(log, indent=1))
    rows = featdisco.split(tmp_path / "log.json").to_pylist()
    assert [(r["kind"], r["record"]) for r in rows] == [("user", "sample 1 epoch 1"),
                                                         ("response", "sample 1 epoch 1")]


def test_json_lines_named_json_with_a_long_first_line(tmp_path: Path) -> None:
    """The first record is longer than the bytes looked at to tell the shape: the second
    record must still be read, not dropped after the first object."""
    recs = [{"id": f"c{i}", "messages": [{"role": "user", "content": "x" * 100_000},
                                         {"role": "assistant", "content": f"a{i}"}]} for i in range(2)]
    path = tmp_path / "lines.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert [r.data["id"] for r in iter_raw(path) if r.data] == ["c0", "c1"]
