"""One runner for every command that writes into a run: the run's lock (a second writer
stops at once, naming the first one's pid), manifest updates merged per key, and every
stored analysis recorded with the clusters it was computed on, so a view tells current
from stale and says how to refresh it."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.pipeline import PipelineConfig, config_from_manifest
from featdisco.rundir import RunDir, open_run
from featdisco.runsummary import record_invocation
from featdisco.stages.base import stage_config
from featdisco.stages.featurize import FeaturizeStage
from tests.analysis.test_cli import small_run
from tests.test_run import _hold_lock


def test_manifest_updates_from_a_stale_copy_keep_what_others_wrote(tmp_path: Path) -> None:
    RunDir(tmp_path).update(config={"seed": 1})
    stale = RunDir(tmp_path)  # a long command read the manifest here ...
    RunDir(tmp_path).merge("scans", {"budget": {"n": 10}})  # ... another command wrote since
    record_invocation(RunDir(tmp_path), {"calls": 3, "sent": 3, "input_tokens": 30, "output_tokens": 6,
                                         "cost_usd": 0.5}, analysis="scan")
    stale.merge("scans", {"other": {"n": 4}})
    record_invocation(stale, {"calls": 2, "sent": 2, "input_tokens": 20, "output_tokens": 4, "cost_usd": 0.25},
                      analysis="label_quality")
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["config"] == {"seed": 1}
    assert set(m["scans"]) == {"budget", "other"}  # merged per key, not the stale copy's whole section
    assert m["llm_totals"]["sent"] == 5 and m["llm_totals"]["cost_usd"] == pytest.approx(0.75)
    assert set(m["llm_by_analysis"]) == {"scan", "label_quality"}


@pytest.mark.parametrize("case", ["missing", "file", "not a run"])
def test_the_api_and_the_cli_refuse_a_wrong_run_directory_in_the_same_words(tmp_path: Path, case: str) -> None:
    """One check (rundir.check_run_dir) for every caller: `open_run` in a script once said
    "no such run directory" where the CLI said "does not exist; give a folder ...", and
    `RunDir` on a file had its own line again."""
    path = {"missing": tmp_path / "runs" / "typo", "file": tmp_path / "notes.txt", "not a run": tmp_path / "other"}[case]
    if case == "file":
        path.write_text("my notes\n")
    elif case == "not a run":
        path.mkdir()
        (path / "readme.txt").write_text("a folder, but not a run\n")
    with pytest.raises(FeatdiscoError) as api, open_run(path, write=False):
        pass
    cli = CliRunner().invoke(app, ["status", str(path)])
    assert cli.exit_code != 0 and str(cli.exception) == str(api.value), (str(cli.exception), str(api.value))
    assert str(path) in str(api.value) and "featdisco run --run-dir" in str(api.value)
    if case == "file":
        with pytest.raises(FeatdiscoError, match="is a file, not a run directory"):
            RunDir(path)
    assert not (tmp_path / "runs").exists()  # nothing created by either


def test_open_run_is_reentrant_in_one_process_and_refuses_a_second_one(tmp_path: Path) -> None:
    with open_run(tmp_path, create=True), open_run(tmp_path, create=True):  # a command handing the run on
        pass
    (tmp_path / "pieces.parquet").touch()  # a run (in part) now: open_run without create accepts it
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(FeatdiscoError, match=f"pid {holder.pid}"), open_run(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with open_run(tmp_path):  # the kernel dropped the killed holder's lock
        pass


@pytest.mark.parametrize("args", [["compare", "{run}", "--by", "model"], ["probe", "{run}"],
                                  ["cooccur", "{run}"], ["frequency", "{run}"], ["report", "{run}"],
                                  ["find", "{run}", "politeness"], ["validate", "{run}", "{run}/l.csv"],
                                  ["demo", "findings", "{run}"]],
                         ids=lambda a: "-".join(a[:2]) if a[0] == "demo" else a[0])
def test_every_writing_command_stops_at_once_when_another_process_writes(tmp_path: Path, args: list[str]) -> None:
    run = small_run(tmp_path / "run")
    (run / "l.csv").write_text("piece_id,target,label\n")  # the arguments are valid: only the lock refuses
    holder = _hold_lock(run)
    try:
        result = CliRunner().invoke(app, [a.format(run=run) for a in args])
    finally:
        holder.kill()
        holder.wait()
    assert isinstance(result.exception, FeatdiscoError), result.output
    assert f"another featdisco process (pid {holder.pid})" in str(result.exception)
    assert not list(run.glob("analysis_*.parquet")) and not (run / "report").exists()


def test_scan_beside_a_writer_exits_2_in_one_line_naming_its_pid(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    (run / "l.csv").write_text("piece_id,target,label\n")  # the arguments are valid: only the lock refuses
    holder = _hold_lock(run)
    try:
        proc = subprocess.run([sys.executable, "-m", "featdisco", "scan", str(run), "--question", "Is it polite?",
                               "--llm", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
                              capture_output=True, text=True, timeout=120,
                              env={"OPENAI_API_KEY": "sk-test", "PATH": "/usr/bin:/bin",
                                   "PYTHONPATH": ":".join(sys.path)})
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert f"another featdisco process (pid {holder.pid})" in proc.stderr
    assert not list(run.glob("scan_*.parquet"))


def _move_one_feature(run: Path) -> None:
    """What an edit does to the final artefacts: a feature changes cluster."""
    a = pq.read_table(run / "assignments.parquet")
    cids = a.column("cluster_id").to_pylist()
    cids[0] = 1 if cids[0] != 1 else 0
    pq.write_table(a.set_column(a.schema.get_field_index("cluster_id"), "cluster_id",
                                pa.array(cids, a.schema.field("cluster_id").type)), run / "assignments.parquet")


def _analyses(run: Path) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(app, ["status", str(run), "--json"])
    assert result.exit_code == 0, result.output
    return {a["name"]: a for a in json.loads(result.stdout)["analyses"]}


def test_an_analysis_is_stale_after_the_clusters_change_and_current_once_rerun(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    runner = CliRunner()
    for unit in ("piece", "transcript"):
        result = runner.invoke(app, ["compare", str(run), "--by", "model", "--unit", unit])
        assert result.exit_code == 0, result.output
    found = _analyses(run)
    # one name per question: --unit transcript did not overwrite --unit piece
    assert {"compare_model", "compare_model_unit-transcript"} <= set(found)
    piece, transcript = found["compare_model"], found["compare_model_unit-transcript"]
    assert piece["current"] is True and transcript["current"] is True
    assert piece["args"]["unit"] == "piece" and transcript["args"]["unit"] == "transcript"
    assert piece["files"] == ["analysis_compare_model.parquet", "analysis_compare_model_rates.parquet"]

    _move_one_feature(run)
    found = _analyses(run)
    assert found["compare_model"]["current"] is False and found["compare_model_unit-transcript"]["current"] is False
    command = str(found["compare_model_unit-transcript"]["command"])
    assert "--unit transcript" in command and command.startswith("featdisco compare ")
    status = runner.invoke(app, ["status", str(run)])
    assert f"stale analysis compare_model_unit-transcript (computed on other clusters); refresh: {command}" \
        in status.output

    from featdisco.report.analysis import write_analyses
    from featdisco.report.shards import ShardWriter

    shown = {a["name"]: a for a in write_analyses(run, ShardWriter(tmp_path / "shards"))}
    assert shown["compare_model_unit-transcript"]["stale"] is True
    assert shown["compare_model_unit-transcript"]["refresh"] == command

    result = runner.invoke(app, shlex.split(command)[1:])  # the command it names refreshes it
    assert result.exit_code == 0, result.output
    found = _analyses(run)
    assert found["compare_model_unit-transcript"]["current"] is True
    assert found["compare_model"]["current"] is False  # not rerun: still stale
    shown = {a["name"]: a for a in write_analyses(run, ShardWriter(tmp_path / "shards2"))}
    assert shown["compare_model_unit-transcript"]["stale"] is False


def test_config_precedence_is_flag_then_manifest_then_default(tmp_path: Path) -> None:
    RunDir(tmp_path).update(config={"max_chars": 60, "seed": 4, "max_cost": 1.0, "n_clusters": 7})
    cfg = config_from_manifest(tmp_path, {"seed": None, "max_features": None})
    assert (cfg.max_chars, cfg.seed, cfg.n_clusters) == (60, 4, 7)  # the manifest's, not the defaults
    assert cfg.max_features == PipelineConfig().max_features  # neither flag nor manifest: the default
    assert cfg.max_cost is None  # a per-invocation cap is never carried over
    cfg = config_from_manifest(tmp_path, {"seed": 9, "max_chars": "<default>", "n_clusters": "<default>"})
    assert (cfg.max_chars, cfg.seed, cfg.n_clusters) == (None, 9, None)  # --max-chars 0, --clusters auto


def test_another_backend_does_not_inherit_the_runs_model_name_or_server(tmp_path: Path) -> None:
    """`ask RUN --llm local` on a run made with an OpenAI-compatible server looked for a local
    model file named after the server's model ("local model file not found: gpt-4.1-mini")."""
    RunDir(tmp_path).update(config={"llm": "openai", "model": "gpt-4.1-mini",
                                    "base_url": "http://127.0.0.1:9/v1", "seed": 4})
    cfg = config_from_manifest(tmp_path, {"llm": "local"})
    assert (cfg.llm, cfg.model, cfg.base_url, cfg.seed) == ("local", None, None, 4)
    cfg = config_from_manifest(tmp_path, {"llm": "local", "model": "/models/other.gguf"})
    assert cfg.model == "/models/other.gguf"  # a flag still counts
    cfg = config_from_manifest(tmp_path, {"llm": "openai"})  # the same backend keeps them
    assert (cfg.model, cfg.base_url) == ("gpt-4.1-mini", "http://127.0.0.1:9/v1")
    assert config_from_manifest(tmp_path, {}).model == "gpt-4.1-mini"
    # a run that named no backend but a server was an OpenAI-compatible run
    RunDir(tmp_path).update(config={"llm": None, "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    assert config_from_manifest(tmp_path, {"llm": "openai"}).model == "m"
    assert config_from_manifest(tmp_path, {"llm": "local"}).model is None


def test_a_stage_config_is_a_frozen_dataclass_made_in_one_place() -> None:
    cfg = stage_config(FeaturizeStage, PipelineConfig(min_features=3, max_features=5))
    assert (cfg.min_features, cfg.max_features) == (3, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.min_features = 4  # type: ignore[misc]
    with pytest.raises(FeatdiscoError, match="does not declare"):
        _ = cfg.seed


def test_pieces_are_cut_as_a_first_run_with_that_max_chars_would_cut_them(tmp_path: Path) -> None:
    from featdisco.api import split
    from featdisco.pipeline import SPLIT, Pipeline
    from tests.conftest import reasoning_chats, write_jsonl

    inputs = write_jsonl(tmp_path / "in.jsonl", reasoning_chats(
        6, user=lambda i: f"Question {i}: " + "why is the sky blue? " * 10,
        thought=lambda i: "Let me think. " * (3 + i), answer=lambda i: f"Answer {i}."))
    rerun = tmp_path / "rerun"
    Pipeline(rerun, PipelineConfig()).run([inputs], stages=SPLIT)
    Pipeline(rerun, PipelineConfig(max_chars=60)).run(stages=SPLIT)  # no inputs: the stored pieces
    cut = pq.read_table(rerun / "pieces.parquet")
    columns = ["piece_id", "text", "chars", "truncated"]
    assert cut.select(columns).to_pylist() == split(inputs, max_chars=60).select(columns).to_pylist()
    assert pc.sum(cut.column("truncated")).as_py() > 0
    Pipeline(rerun, PipelineConfig()).run(stages=SPLIT)  # and back: the full pieces again
    assert pc.sum(pq.read_table(rerun / "pieces.parquet").column("truncated")).as_py() == 0


def test_a_run_made_when_split_was_the_source_reruns_without_inputs(tmp_path: Path) -> None:
    from featdisco.pipeline import SPLIT, Pipeline
    from tests.conftest import reasoning_chats, write_jsonl

    inputs = write_jsonl(tmp_path / "in.jsonl", reasoning_chats(
        3, user=lambda i: f"Question {i}", thought=lambda i: f"Thinking {i}", answer=lambda i: f"Answer {i}."))
    run = tmp_path / "run"
    Pipeline(run, PipelineConfig()).run([inputs], stages=SPLIT)
    with RunDir(run).transact() as m:  # what such a run holds: a split record and pieces.parquet only
        del m["stages"]["read"]
        m["stages"]["split"]["outputs"] = ["pieces.parquet"]
    (run / "pieces_uncut.parquet").unlink()
    before = pq.read_table(run / "pieces.parquet")
    result = Pipeline(run, PipelineConfig()).run(stages=SPLIT)  # no inputs
    assert [t.name for t in result.stages] == ["read", "split"]
    assert pq.read_table(run / "pieces.parquet").equals(before)
    assert RunDir(run).stage("read") is not None
