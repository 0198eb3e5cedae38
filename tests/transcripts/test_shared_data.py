"""The real public transcripts in ../shared/data split with the right counts, no options."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq


def test_split_all_shared_data_without_options(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pieces.parquet"
    proc = subprocess.run([sys.executable, "-m", "featdisco", "split", str(shared_data), "-o", str(out),
                           "--stats"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # The detected format of every file is reported.
    assert "model_answer/gpt-4.jsonl: mt-bench (detected)" in proc.stderr
    assert "harmless-base_test.jsonl.gz: hh-rlhf (detected)" in proc.stderr
    assert "gpt-4o-2024-05-13.model_outputs.json: alpaca-eval (detected)" in proc.stderr

    rows = pq.read_table(out, columns=["piece_id", "transcript_id", "kind", "format", "model",
                                       "metadata"]).to_pylist()
    counts = Counter((r["format"], r["kind"]) for r in rows)
    # MT-bench: 8 models x 80 questions x 2 turns; one llama-13b answer is empty.
    assert counts[("mt-bench", "user")] == 1280
    assert counts[("mt-bench", "response")] == 1279
    empty = [r for r in rows if r["format"] == "mt-bench" and r["model"] == "llama-13b"]
    assert len(empty) == 319
    # AlpacaEval: 805 instructions x 4 models.
    assert counts[("alpaca-eval", "user")] == 3220
    # HH-RLHF: 2,312 records, each a chosen and a rejected dialogue.
    hh = {r["transcript_id"] for r in rows if r["format"] == "hh-rlhf"}
    assert len(hh) == 2 * 2312
    assert not any(k == "thought" for (_f, k) in counts)
    assert len({r["piece_id"] for r in rows}) == len(rows)
    # MT-bench pieces carry the question id and category for paired comparisons later.
    meta = json.loads(next(r["metadata"] for r in rows if r["format"] == "mt-bench"))
    assert {"question_id", "category"} <= set(meta)
    assert "mt-bench" in proc.stdout or "gpt-4" in proc.stdout
