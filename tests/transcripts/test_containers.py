"""One conversation reads the same from every container: JSON, JSONL, JSONL.gz, Parquet,
CSV and a saved Hugging Face dataset; folders are walked; ids are stable across runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featdisco
from featdisco import ReadReport
from tests.conftest import write_json, write_jsonl

RECORDS: list[dict[str, Any]] = [
    {"id": f"c{i}", "model": "m", "messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"<think>thinking {i}</think>answer {i}"}]}
    for i in range(3)
]
EXPECTED = [(f"c{i}", kind, f"{kind_text} {i}") for i in range(3)
            for kind, kind_text in (("user", "question"), ("thought", "thinking"), ("response", "answer"))]


def triples(path: Path | list[Path], **kw: Any) -> list[tuple[str, str, str]]:
    rows = featdisco.split(path, **kw).to_pylist()
    return [(r["transcript_id"], r["kind"], r["text"]) for r in rows]


def test_json_array_jsonl_and_gzip(tmp_path: Path) -> None:
    assert triples(write_json(tmp_path / "a.json", RECORDS)) == EXPECTED
    assert triples(write_jsonl(tmp_path / "a.jsonl", RECORDS)) == EXPECTED
    assert triples(write_jsonl(tmp_path / "a.jsonl.gz", RECORDS, gz=True)) == EXPECTED
    # A ".json" file that is really JSON Lines, and a dict wrapping a list of records.
    assert triples(write_jsonl(tmp_path / "lines.json", RECORDS)) == EXPECTED
    assert triples(write_json(tmp_path / "wrapped.json", {"data": RECORDS})) == EXPECTED


def test_parquet_and_csv_with_nested_messages(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    assert triples(path) == EXPECTED

    csv_path = tmp_path / "a.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "model", "messages"])
        w.writeheader()
        for r in RECORDS:
            w.writerow({**r, "messages": json.dumps(r["messages"])})
    assert triples(csv_path) == EXPECTED


def test_saved_hf_dataset_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(RECORDS)
    ds.save_to_disk(str(tmp_path / "ds"))
    assert triples(tmp_path / "ds") == EXPECTED

    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list(RECORDS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    rows = featdisco.split(tmp_path / "dd", meta=["split"]).to_pylist()
    assert [r["split"] for r in rows] == ["train"] * 9 + ["test"] * 3
    assert rows[-1]["transcript_id"] == "c0#2"  # the same record twice gets a unique id


def test_folder_walk_reports_each_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "a.jsonl", RECORDS[:1])
    write_json(tmp_path / "d" / "sub" / "b.json", RECORDS[1:])
    (tmp_path / "d" / "LICENSE").write_text("not data")
    report = ReadReport()
    assert triples(tmp_path / "d", report=report) == EXPECTED
    assert [(Path(f.path).name, f.format, f.transcripts) for f in report.files] == [
        ("a.jsonl", "openai", 1), ("b.json", "openai", 2)]


def test_ids_are_stable_across_processes(tmp_path: Path) -> None:
    """Records without ids get a content hash: the same input gives the same ids in a new
    process (Python's own str hash is randomised per process)."""
    recs = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(3)] * 2
    path = write_jsonl(tmp_path / "noid.jsonl", recs)
    code = ("import featdisco,sys; print(featdisco.split(sys.argv[1]).column('piece_id').to_pylist())")
    runs = [subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    ids = eval(runs[0])  # a printed list of strings
    assert len(set(ids)) == len(ids) == 12
    assert all(i.startswith("h") for i in ids)


def test_utf8_byte_order_mark_is_stripped(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and many Windows tools start files with a BOM (EF BB BF)."""
    bom = b"\xef\xbb\xbf"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(bom + b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS))
    assert triples(jsonl) == EXPECTED
    arr = tmp_path / "bom.json"
    arr.write_bytes(bom + json.dumps(RECORDS).encode())
    assert triples(arr) == EXPECTED
    csv_path = tmp_path / "bom.csv"
    with csv_path.open("w", newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8"
        w = csv.DictWriter(f, fieldnames=["prompt", "response"])
        w.writeheader()
        w.writerow({"prompt": "question 0", "response": "answer 0"})
    rows = featdisco.split(csv_path, meta=["prompt"]).to_pylist()
    assert [(r["kind"], r["text"]) for r in rows] == [("user", "question 0"), ("response", "answer 0")]
    assert rows[0]["prompt"] == "question 0"  # the column's name has no BOM glued to it
