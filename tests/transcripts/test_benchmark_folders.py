"""Benchmark folders as their repositories lay them out (issue 13, item 7): judge
reference answers are not a model's transcripts; Arena-Hard v2 answers are joined with
their question file so ``--meta category`` is filled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import write_jsonl


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featdisco", *map(str, args)], capture_output=True,
                          text=True)


def mt_bench_answer(qid: int, model: str, turns: list[str]) -> dict[str, object]:
    return {"question_id": qid, "answer_id": f"{model}-{qid}", "model_id": model,
            "choices": [{"index": 0, "turns": turns}], "tstamp": 1.0}


def test_mt_bench_reference_answers_are_skipped_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "data" / "mt_bench"
    write_jsonl(root / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."]},
        {"question_id": 111, "category": "math", "turns": ["Area of the triangle?", "Its circle?"],
         "reference": ["3", "5 pi"]}])
    write_jsonl(root / "model_answer" / "vicuna-13b.jsonl",
                [mt_bench_answer(81, "vicuna-13b", ["Post.", "Rewritten."]),
                 mt_bench_answer(111, "vicuna-13b", ["2", "4 pi"])])
    write_jsonl(root / "reference_answer" / "gpt-4.jsonl",
                [mt_bench_answer(111, "gpt-4", ["3", "5 pi"])])
    write_jsonl(root / "model_judgment" / "gpt-4_single.jsonl",
                [{"question_id": 81, "model": "vicuna-13b", "judge": ["gpt-4", "single-v1"],
                  "user_prompt": "[Question] ...", "judgment": "Rating: [[8]]", "score": 8, "turn": 1}])
    out = tmp_path / "o.parquet"
    proc = run_cli("split", tmp_path / "data", "-o", out, "--meta", "category")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert set(table.column("model").to_pylist()) == {"vicuna-13b"}
    assert table.num_rows == 8
    assert "skipped 2 judge files (reference answers and judgments are not model transcripts; " \
        "name a file to read it)" in proc.stdout
    assert "reference_answer/gpt-4.jsonl" in proc.stdout
    assert sorted(set(table.column("category").to_pylist())) == ["math", "writing"]


def test_arena_hard_v2_answers_are_joined_with_their_questions(tmp_path: Path) -> None:
    root = tmp_path / "data" / "arena-hard-v2.0"
    write_jsonl(root / "question.jsonl", [
        {"uid": "u1", "category": "hard_prompt", "subcategory": "coding", "prompt": "Write a parser."},
        {"uid": "u2", "category": "creative_writing", "subcategory": "poem", "prompt": "A poem."}])
    write_jsonl(root / "model_answer" / "o3-mini.jsonl", [
        {"uid": uid, "ans_id": f"a{uid}", "model": "o3-mini", "tstamp": 1.0,
         "messages": [{"role": "user", "content": prompt},
                      {"role": "assistant", "content": {"answer": f"answer to {uid}"}}],
         "metadata": {"token_len": 3}}
        for uid, prompt in (("u1", "Write a parser."), ("u2", "A poem."))])
    out = tmp_path / "o.parquet"
    proc = run_cli("split", tmp_path / "data", "-o", out, "--meta", "category,subcategory")
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(out).to_pylist()
    assert [(r["kind"], r["text"], r["category"], r["subcategory"]) for r in rows] == [
        ("user", "Write a parser.", "hard_prompt", "coding"),
        ("response", "answer to u1", "hard_prompt", "coding"),
        ("user", "A poem.", "creative_writing", "poem"),
        ("response", "answer to u2", "creative_writing", "poem")]
    assert "warning" not in proc.stderr
