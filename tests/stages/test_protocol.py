"""The stage protocol: each stage's fingerprint follows exactly what it declares, a stage
cannot touch what it does not declare, and a failed stage leaves the run as it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featdisco.errors import FeatdiscoError
from featdisco.pipeline import PIPELINE, PipelineConfig
from featdisco.prompts import PROMPT_NAMES, load_prompt, parse_prompt
from featdisco.rundir import RunDir
from featdisco.stages.base import Backends, Stage, StageContext, StageResult, StageRunner

ARTEFACTS = sorted({a for s in PIPELINE for a in (*s.reads, *s.writes)})


class FakeBackends(Backends):
    def __init__(self) -> None:
        self.ids: dict[str, Any] = {"llm": {"backend": "openai", "model": "m"}, "embedder": "minilm"}
        self.prompts = {n: load_prompt(n) for n in PROMPT_NAMES}

    def identity(self, backend: str) -> Any:
        return self.ids[backend]

    @property
    def engine(self) -> Any:
        return "engine"

    @property
    def embedder(self) -> Any:
        return "embedder"

    @property
    def executor(self) -> Any:
        return None

    def prompt(self, name: str) -> Any:
        return self.prompts[name]


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "featurize": "other.txt"}
    return 7  # None


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    rd = RunDir(tmp_path)
    for name in ARTEFACTS:
        (tmp_path / name).write_bytes(f"content of {name}".encode())
    return rd


@pytest.mark.parametrize("stage", [s for s in PIPELINE if not s.source], ids=lambda s: s.name)
def test_the_fingerprint_changes_with_each_declared_input_and_nothing_else(run: RunDir, stage: Stage) -> None:
    cfg, backends = PipelineConfig(), FakeBackends()
    base = StageRunner(run, cfg, backends, print).fingerprint(stage)
    assert StageRunner(run, cfg, backends, print).fingerprint(stage) == base  # stable
    for name in ARTEFACTS:
        path = run.file(name)
        old = path.read_bytes()
        path.write_bytes(old + b" edited")
        changed = StageRunner(run, cfg, backends, print).fingerprint(stage) != base
        path.write_bytes(old)
        assert changed == (name in stage.reads), name
    for f in dataclasses.fields(PipelineConfig):
        other = dataclasses.replace(cfg, **{f.name: _changed(getattr(cfg, f.name))})
        changed = StageRunner(run, other, backends, print).fingerprint(stage) != base
        assert changed == (f.name in stage.config), f.name
    for name in PROMPT_NAMES:
        edited = FakeBackends()
        p = edited.prompts[name]
        edited.prompts[name] = parse_prompt(name, p.file, p.text + "\nOne more instruction.")
        changed = StageRunner(run, cfg, edited, print).fingerprint(stage) != base
        assert changed == (stage.prompt == name), name
    for backend in ("llm", "embedder"):
        other_b = FakeBackends()
        other_b.ids[backend] = "something else"
        changed = StageRunner(run, cfg, other_b, print).fingerprint(stage) != base
        assert changed == (backend in stage.backends), backend


def test_a_deleted_input_changes_the_fingerprint(run: RunDir) -> None:
    stage = next(s for s in PIPELINE if s.name == "name")
    runner = StageRunner(run, PipelineConfig(), FakeBackends(), print)
    before = runner.fingerprint(stage)
    run.file("features.parquet").unlink()
    assert runner.fingerprint(stage) != before


class Sneaky(Stage):
    name = "sneaky"
    version = 1
    reads = ("features.parquet",)
    writes = ("labels.parquet",)
    config = ("seed",)
    what = ""

    def run(self, ctx: StageContext) -> StageResult:
        if self.what == "read":
            ctx.read_table("pieces.parquet")
        elif self.what == "write":
            ctx.output("ratings.parquet")
        elif self.what == "config":
            _ = ctx.config.sample_size
        elif self.what == "llm":
            _ = ctx.engine
        elif self.what == "prompt":
            _ = ctx.prompt
        return StageResult({})


@pytest.mark.parametrize("what", ["read", "write", "config", "llm", "prompt"])
def test_a_stage_cannot_use_what_it_does_not_declare(run: RunDir, what: str) -> None:
    stage = Sneaky()
    stage.what = what
    with pytest.raises(FeatdiscoError, match=r"does not declare|declares no prompt"):
        StageRunner(run, PipelineConfig(), FakeBackends(), lambda _m: None).run(stage)
    assert run.stage("sneaky") is None
    assert not list(run.path.glob(".stage-*"))


class Failing(Stage):
    name = "name"
    version = 1
    reads = ("features.parquet",)
    writes = ("labels.parquet", "ratings.parquet")

    def run(self, ctx: StageContext) -> StageResult:
        ctx.write_table("labels.parquet", pa.table({"label": ["new"]}))
        raise RuntimeError("the stage failed midway")


def test_a_failed_stage_leaves_the_previous_outputs_and_no_temporaries(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    pq.write_table(pa.table({"label": ["old"]}), tmp_path / "labels.parquet")
    (tmp_path / "features.parquet").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="midway"):
        StageRunner(run, PipelineConfig(), FakeBackends(), lambda _m: None).run(Failing())
    assert pq.read_table(tmp_path / "labels.parquet").column("label").to_pylist() == ["old"]
    assert run.stage("name") is None
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]


class Writes(Stage):
    name = "writes"
    version = 1
    writes = ("labels.parquet",)

    def run(self, ctx: StageContext) -> StageResult:
        ctx.write_table("labels.parquet", pa.table({"label": ["a"]}))
        return StageResult({"n": 1})


def test_a_finished_stage_is_skipped_until_its_output_goes(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    runner = StageRunner(run, PipelineConfig(), FakeBackends(), lambda _m: None)
    assert not runner.run(Writes()).skipped
    assert runner.run(Writes()).skipped
    (tmp_path / "labels.parquet").unlink()
    assert not runner.run(Writes()).skipped
    assert run.manifest["artefacts"]["labels.parquet"]["hash"]
