"""Conversation trees (OpenAssistant): every root-to-leaf path, or the top-ranked one, with
the turns that paths share split into one piece."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import featdisco
from featdisco import ReadReport, SplitStats

FIXTURES = Path(__file__).parent / "fixtures" / "shapes"
NESTED = FIXTURES / "oasst" / "2023-04-12_oasst_ready.trees.jsonl"
TREE = "6ab24d72-0181-4594-a9cd-deaf170242fb"
PROMPT = 'Can you write a short introduction about the relevance of the term "monopsony" in economics?'


def split(path: Path, **kw: Any) -> tuple[list[dict[str, Any]], SplitStats, ReadReport]:
    stats, report = SplitStats(), ReadReport()
    rows = featdisco.split(path, stats=stats, report=report, **kw).to_pylist()
    return rows, stats, report


def texts(rows: list[dict[str, Any]], tree: str = TREE) -> list[tuple[int, str, str]]:
    return [(r["turn"], r["kind"], r["text"]) for r in rows if r["transcript_id"].startswith(tree)]


def test_every_path_is_a_transcript_and_shared_turns_are_one_piece() -> None:
    rows, stats, report = split(NESTED)
    assert report.files[0].format == "oasst-trees"
    assert stats.transcripts == 3  # the deleted reply is not a path
    assert texts(rows) == [
        (0, "user", PROMPT),
        (1, "response", "Monopsony is a market structure in which a single buyer faces many sellers."),
        (2, "user", "Now explain it to a dog"),
        (3, "response", "Woof: one buyer, many sellers."),  # best-ranked path first
        (3, "response", "Imagine one dog park owner buys all the bones."),
        (1, "response", '"Monopsony" refers to a market structure where there is only one buyer.'),
    ]
    assert stats.shared_pieces == 4  # the prompt twice, the first reply and the follow-up once
    ids = [r["piece_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    # each path is its own transcript, named by tree and leaf
    assert {r["transcript_id"] for r in rows} == {
        f"{TREE}:e0635603-09f7-4d2b-a2a0-f2a5a7e8b4a2", f"{TREE}:18145bf4-37fd-4ac0-80f5-6108b5f2b365",
        f"{TREE}:c8e83833-ecbc-44fe-b6db-735228c25a1c"}
    meta = json.loads(rows[0]["metadata"])
    assert meta["deleted_replies"] == 1 and meta["lang"] == "en"


def test_tree_first_keeps_only_the_top_ranked_path() -> None:
    rows, stats, _ = split(NESTED, tree="first")
    assert stats.transcripts == 1
    assert [t for _, _, t in texts(rows)] == [
        PROMPT, "Monopsony is a market structure in which a single buyer faces many sellers.",
        "Now explain it to a dog", "Woof: one buyer, many sellers."]


@pytest.mark.parametrize("container", ["jsonl", "parquet"])
def test_flat_message_rows_read_as_the_same_trees(tmp_path: Path, container: str) -> None:
    path = FIXTURES / "oasst_rows.jsonl"
    if container == "parquet":  # the Hugging Face oasst1 layout
        records = [json.loads(line) for line in path.read_text().splitlines()]
        path = tmp_path / "train-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
    rows, _stats, report = split(path)
    assert report.files[0].format == "oasst-messages"
    nested, _, _ = split(NESTED)
    assert texts(rows) == texts(nested)
    assert texts(rows, "t2-root") == [(0, "user", "Hi!"), (1, "response", "Hello! How can I help?")]
    # the same content at the same position has the same id whichever layout it came from
    assert {r["piece_id"] for r in nested} <= {r["piece_id"] for r in rows}


def test_tree_flag_is_checked() -> None:
    with pytest.raises(featdisco.FeatdiscoError, match="--tree"):
        split(NESTED, tree="best")


def test_rows_of_a_tree_apart_in_the_file_are_an_error_naming_the_fix(tmp_path: Path) -> None:
    lines = (FIXTURES / "oasst_rows.jsonl").read_text().splitlines()
    moved = tmp_path / "shuffled.jsonl"
    moved.write_text("\n".join([*lines[:3], *lines[-2:], *lines[3:-2]]) + "\n")  # tree 2 in the middle
    with pytest.raises(featdisco.InputError, match="sort the rows by message_tree_id"):
        split(moved)
