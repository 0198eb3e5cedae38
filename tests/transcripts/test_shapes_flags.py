"""The reading flags: the same names on split, run and transform; model names per file;
``--map`` with dotted paths; featdisco's own pieces.parquet as input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import featdisco
from featdisco.cli import app
from tests.conftest import write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "shapes"
READING_FLAGS = ("--format", "--map", "--meta", "--source-model", "--source-model-from", "--skip-bad",
                 "--limit", "--tree")


def _models(path: Path, **kw: object) -> dict[str, str | None]:
    """Each answer's file (named in its text) and the model it was given."""
    return {r["text"].removeprefix("Hello from "): r["model"] for r in featdisco.split(path, **kw).to_pylist()
            if r["kind"] == "response"}


def _answers(folder: Path, name: str, model_field: str | None = None) -> Path:
    rec = {"prompt": "Hi", "response": f"Hello from {name}",
           "meta": {"policy": f"policy-{name}"}}
    if model_field:
        rec["model"] = model_field
    return write_jsonl(folder / name, [rec], gz=name.endswith(".gz"))


def test_source_model_from_filename_dirname_or_a_field(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _answers(flat, "gpt-4.jsonl", model_field="wrong-label")
    _answers(flat, "llama-13b.jsonl.gz")
    # the file names the model, even where records carry a model field of their own
    assert _models(flat, source_model_from="filename") == {"gpt-4.jsonl": "gpt-4",
                                                           "llama-13b.jsonl.gz": "llama-13b"}
    nested = tmp_path / "nested"
    _answers(nested / "claude-3-opus", "answers.jsonl")
    _answers(nested / "qwen2-72b", "answers2.jsonl")
    assert set(_models(nested, source_model_from="dirname").values()) == {"claude-3-opus", "qwen2-72b"}
    assert _models(flat / "gpt-4.jsonl", source_model_from="meta.policy") == {"gpt-4.jsonl": "policy-gpt-4.jsonl"}
    # a field no record has is said, not a silent fall-back
    report = featdisco.ReadReport()
    featdisco.split(flat, source_model_from="meta.polcy", report=report)
    assert any("--source-model-from meta.polcy: no record has this field" in w for w in report.warnings)
    # without the flag the record's own field and then --source-model are used
    assert _models(flat, model="fallback") == {"gpt-4.jsonl": "wrong-label",
                                                      "llama-13b.jsonl.gz": "fallback"}


def test_map_takes_dotted_paths(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "logs.jsonl", [
        {"uid": "a", "req": {"prompt": "2+2?", "params": {"temperature": 0.2}},
         "out": {"text": "4", "model": "small-1"}}])
    rows = featdisco.split(path, mapping="user=req.prompt,response=out.text,model=out.model,id=uid",
                           meta=["req.params.temperature"]).to_pylist()
    assert [(r["kind"], r["text"], r["model"], r["transcript_id"]) for r in rows] == [
        ("user", "2+2?", "small-1", "a"), ("response", "4", "small-1", "a")]
    assert rows[0]["req.params.temperature"] == "0.2"


@pytest.mark.parametrize("command", ["split", "run", "transform"])
def test_split_run_and_transform_take_the_same_reading_flags(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    found = set(re.findall(r"--[a-z-]+", result.output))
    assert set(READING_FLAGS) <= found
    assert ("--model" in found) == (command != "split")  # in run and transform --model is the LLM


def test_split_cli_with_the_shared_flags(tmp_path: Path) -> None:
    flat = tmp_path / "answers"
    _answers(flat, "gpt-4.jsonl")
    _answers(flat, "mistral-7b.jsonl")
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(app, ["split", str(flat), "-o", str(out), "--source-model-from", "filename",
                                      "--map", "user=prompt,response=response", "--meta", "meta.policy",
                                      "--limit", "1", "--tree", "first"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert {r["model"] for r in rows} == {"gpt-4", "mistral-7b"}
    assert {r["meta.policy"] for r in rows} == {"policy-gpt-4.jsonl", "policy-mistral-7b.jsonl"}
    bad = CliRunner().invoke(app, ["split", str(flat), "-o", str(out), "--tree", "best"])
    assert bad.exit_code != 0


def test_pieces_parquet_reads_back_as_the_same_pieces_and_runs(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "pieces.parquet"
    inputs = [FIXTURES / "claude_code", FIXTURES / "api_log.jsonl", FIXTURES / "oasst"]
    featdisco.split(inputs).to_pylist()
    result = CliRunner().invoke(app, ["split", *map(str, inputs), "-o", str(first)])
    assert result.exit_code == 0, result.output
    again = featdisco.split(first)
    cols = ["transcript_id", "turn", "kind", "text", "model", "system", "redacted", "tool_output"]
    original = pq.read_table(first)
    assert again.select(cols).to_pylist() == original.select(cols).to_pylist()
    # piece ids are kept, except a conversation tree's (its shared turns were split once, and
    # are named again from what the file holds: still unique)
    trees = [f == "oasst-trees" for f in original.column("format").to_pylist()]
    ids = zip(again.column("piece_id").to_pylist(), original.column("piece_id").to_pylist(), strict=True)
    assert all(a == b for (a, b), tree in zip(ids, trees, strict=True) if not tree)
    assert len(set(again.column("piece_id").to_pylist())) == again.num_rows
    meta = json.loads(again.column("metadata")[0].as_py())
    assert meta["origin"].endswith(".jsonl, lines 1-18")  # where the piece first came from
    # `run` takes it as input (a dry run: nothing is sent)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    dry = CliRunner().invoke(app, ["run", str(first), "--run-dir", str(tmp_path / "run"), "--dry-run",
                                   "--llm", "openai", "--model", "gpt-4o-mini",
                                   "--base-url", "http://127.0.0.1:9/v1"])
    assert dry.exit_code == 0, dry.output
    assert f"dry run, featurize: {again.num_rows} calls" in dry.output
