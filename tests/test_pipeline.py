"""The whole discovery pipeline over real HTTP against the fake LLM server, on real pieces
from ../shared/data, with the real MiniLM embedder and faiss clustering."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import normalized_mutual_info_score

import featdisco
from featdisco.errors import FeatdiscoError
from featdisco.estimator import FeatureDiscovery
from featdisco.pipeline import Pipeline, PipelineConfig, config_from_manifest
from tests.conftest import copy_mt_bench, interactive_sigint, reasoning_chats, write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import (  # noqa: F401  (pipeline_server, fake_api_key: fixtures)
    GROUP_OF_FEATURE,
    REWORD,
    fake_api_key,
    group_of_text,
    pipeline_handler,
    pipeline_server,
)

K = 3  # clusters per kind = the number of planted groups
CONCURRENCY = 2  # of the killed CLI runs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Real MT-bench answers of two models to the first 8 questions, plus a few
    transcripts with reasoning so that all three kinds of piece occur."""
    root = tmp_path_factory.mktemp("inputs")
    copy_mt_bench(root, shared_data, 8)
    write_jsonl(root / "reasoning.jsonl", reasoning_chats(
        12, user=lambda i: f"Question number {i} about topic {i * 7}",
        thought=lambda i: f"Let me think about topic {i * 7} step {i}.", answer=lambda i: f"Answer {i}."))
    return root


def config(server: FakeOpenAIServer, **kw: object) -> PipelineConfig:
    base = {"llm": "openai", "model": "fake-rater", "base_url": server.base_url, "n_clusters": K,
            "concurrency": 8}
    base.update(kw)
    return PipelineConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fitted(server: FakeOpenAIServer, inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
    run_dir = tmp_path_factory.mktemp("run")
    result = Pipeline(run_dir, config(server)).run([inputs])
    assert result.complete
    return run_dir


def test_clusters_recover_planted_groups(fitted: Path) -> None:
    features = pq.read_table(fitted / "features.parquet").to_pylist()
    assignments = pq.read_table(fitted / "assignments.parquet").to_pylist()
    truth = [GROUP_OF_FEATURE[f["text"]] for f in features]
    found = [a["cluster_id"] for a in assignments]
    kinds = {f["kind"] for f in features}
    assert kinds == {"user", "thought", "response"}
    nmi = normalized_mutual_info_score([f"{f['kind']}:{t}" for f, t in zip(features, truth, strict=True)],
                                       found)
    assert nmi > 0.9, nmi
    # and each feature's piece really was put in the group the script chose for its text
    pieces = {p["piece_id"]: p for p in pq.read_table(fitted / "pieces.parquet").to_pylist()}
    assert all(group_of_text(pieces[f["piece_id"]]["text"]) == GROUP_OF_FEATURE[f["text"]] for f in features)


def test_every_cluster_is_named_and_rated_and_the_run_dir_is_complete(fitted: Path) -> None:
    clusters = pq.read_table(fitted / "clusters.parquet").to_pylist()
    assert len(clusters) == 3 * K
    for c in clusters:
        assert c["label"].startswith("Cluster about ")
        assert 1 <= c["interest"] <= 100 and c["private"] is False
        assert c["size"] > 0 and c["pieces"] > 0 and c["examples"]
    # The script rates the sadness clusters highest: interest must follow the label.
    sad = [c["interest"] for c in clusters if "sadness" in c["label"]]
    assert sad and all(i == 90 for i in sad)
    labels = pq.read_table(fitted / "labels.parquet").to_pylist()
    assert all(0 < len(lab["sample"]) <= 100 for lab in labels)
    for name in ("manifest.json", "llm_cache.sqlite", "pieces.parquet", "features.parquet", "strings.parquet",
                 "embeddings.npy", "assignments.parquet", "clusters_base.parquet", "labels.parquet",
                 "ratings.parquet", "clusters.parquet", "centroids_user.npy", "centroids_thought.npy",
                 "centroids_response.npy", "merges.parquet", "raw_assignments.parquet", "raw_labels.parquet"):
        assert (fitted / name).exists(), name
    manifest = json.loads((fitted / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"read", "split", "featurize", "embed", "cluster", "name", "merge", "curate", "rate",
                                       "assemble"}
    assert all(s["complete"] for s in manifest["stages"].values())
    assert manifest["prompts"]["featurize"].startswith("featurize.v4.txt@")  # with evidence
    assert manifest["stages"]["featurize"]["llm"]["calls"] > 0
    for path in fitted.rglob("*"):
        if path.is_file():
            assert b"sk-test-not-a-real-key" not in path.read_bytes(), path


def test_rerun_skips_everything_and_sends_nothing(server: FakeOpenAIServer, inputs: Path, fitted: Path) -> None:
    before = server.total
    pipe = Pipeline(fitted, config(server))
    result = pipe.run([inputs])
    # read always re-reads its inputs; every other stage, split included, is skipped
    assert [t.skipped for t in result.stages] == [False] + [True] * 9
    assert server.total == before
    # the totals of the run that made the calls stay on record for `featdisco status`
    assert json.loads((fitted / "manifest.json").read_text())["llm_totals"]["calls"] > 0


def test_changing_the_naming_prompt_reruns_only_naming_and_rating(
        server: FakeOpenAIServer, inputs: Path, fitted: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(fitted, run_dir)
    prompt = featdisco.prompts.load_prompt("name")
    edited = tmp_path / "name.v1.txt"
    edited.write_text(prompt.text.replace("concise label", "short, concise label"))
    before = server.total
    result = Pipeline(run_dir, config(server, prompt_files={"name": str(edited)})).run([inputs])
    ran = [t.name for t in result.stages if not t.skipped]
    # read always re-reads (its output is unchanged, so split is skipped); the merge check
    # shows the new labels; curate names what edits make with this prompt
    assert ran == ["read", "name", "merge", "curate", "rate", "assemble"]
    labels = pq.read_table(run_dir / "clusters.parquet").column("label").to_pylist()
    assert all(label.startswith("Short cluster about") for label in labels)
    # One naming call per cluster, one merge check and one rating batch per kind (K < 10); nothing else.
    assert server.total - before == 3 * K + 3 + 3


def test_reworded_features_rename_the_clusters_even_when_the_partition_stays(
        server: FakeOpenAIServer, inputs: Path, fitted: Path, tmp_path: Path) -> None:
    """The stale-label case: a new featurize prompt words every feature differently but
    every feature keeps its cluster. Naming reads the feature texts, so it must rerun (it
    was fingerprinted on the partition alone and kept labels of features that no longer
    existed), and rating with it."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(fitted, run_dir)
    prompt = featdisco.prompts.load_prompt("featurize")
    mine = tmp_path / "agentic.txt"
    mine.write_text(prompt.text.replace("### user", f"{REWORD}\n\n### user"))
    result = Pipeline(run_dir, config(server, prompt_files={"featurize": str(mine)})).run([inputs])
    ran = [t.name for t in result.stages if not t.skipped]
    assert {"featurize", "name", "rate", "assemble"} <= set(ran)
    fitted_members = pq.read_table(fitted / "assignments.parquet").column("cluster_id").to_pylist()
    ours = pq.read_table(run_dir / "assignments.parquet").column("cluster_id").to_pylist()
    assert normalized_mutual_info_score(fitted_members, ours) == pytest.approx(1.0)  # the same partition
    labels = pq.read_table(run_dir / "clusters.parquet").column("label").to_pylist()
    assert labels and all(label.startswith("Reworded cluster about") for label in labels)
    assert (run_dir / "prompts" / "featurize" / "agentic.txt").read_text() == mine.read_text()


def test_a_custom_prompt_without_its_placeholder_is_refused_before_any_call(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featdisco.cli import app

    bad = tmp_path / "bad.txt"
    bad.write_text("### system\nDescribe it.\n### user\nHere is a piece of $kind_description.")
    before = server.total
    res = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "r"), "--llm", "openai",
                                   "--model", "fake-rater", "--base-url", server.base_url,
                                   "--prompt", f"featurize={bad}"])
    assert isinstance(res.exception, FeatdiscoError), res.output  # main() prints it and exits 2
    assert "must use $text" in str(res.exception) and str(bad) in str(res.exception)
    assert server.total == before and not (tmp_path / "r").exists()
    typo = tmp_path / "typo.txt"
    typo.write_text("### user\n$text with $max_feature features")
    res = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "r"), "--llm", "openai",
                                   "--model", "fake-rater", "--base-url", server.base_url,
                                   "--prompt", f"featurize={typo}"])
    assert isinstance(res.exception, FeatdiscoError) and "uses $max_feature," in str(res.exception)


def test_a_rerun_without_inputs_takes_the_runs_settings_and_honours_max_chars(
        server: FakeOpenAIServer, fitted: Path, tmp_path: Path) -> None:
    """``featdisco run --run-dir RUN --max-chars 60`` (no inputs, no LLM flags) cuts the
    stored pieces again with the run's own LLM settings (flag > manifest > default); a
    rerun without flags keeps 60; ``--max-chars 0`` gives the full pieces back from the cache."""
    import shutil

    from typer.testing import CliRunner

    from featdisco.cli import app

    run_dir = tmp_path / "copy"
    shutil.copytree(fitted, run_dir)
    result = CliRunner().invoke(app, ["run", "--run-dir", str(run_dir), "--max-chars", "60", "-q"])
    assert result.exit_code == 0, result.output
    pieces = pq.read_table(run_dir / "pieces.parquet")
    cut = [t for t, flag in zip(pieces.column("text").to_pylist(), pieces.column("truncated").to_pylist(),
                                strict=True) if flag]
    assert cut and all(t.split("\n[… truncated")[0] == t[:60] and len(t.split("\n[…")[0]) == 60 for t in cut)
    assert all(len(t) <= 60 for t, flag in zip(pieces.column("text").to_pylist(),
                                               pieces.column("truncated").to_pylist(), strict=True) if not flag)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["max_chars"] == 60 and manifest["config"]["model"] == "fake-rater"
    before = server.total
    again = Pipeline(run_dir, config_from_manifest(run_dir, own_prompts=True)).run()
    assert all(t.skipped for t in again.stages) and server.total == before  # the run's settings: nothing to redo
    result = CliRunner().invoke(app, ["run", "--run-dir", str(run_dir), "--max-chars", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(run_dir / "pieces.parquet").equals(pq.read_table(fitted / "pieces.parquet"))
    assert server.total == before  # the full pieces' features come from the cache


def test_a_run_records_its_embedder_by_name_and_a_run_that_recorded_none_keeps_the_old_default(
        server: FakeOpenAIServer, fitted: Path, tmp_path: Path) -> None:
    """The default embedder changed (minilm → minilm-q8): a run now stores the default's name,
    and a run made before, which stored none, goes on with the model its vectors came from
    (a rerun or find must never embed with another model than the run did)."""
    from featdisco.embedders import DEFAULT_EMBEDDER, LEGACY_EMBEDDER
    from featdisco.evidence.find import run_embedder_name
    from featdisco.rundir import RunDir

    assert json.loads((fitted / "manifest.json").read_text())["config"]["embedder"] == DEFAULT_EMBEDDER
    old = tmp_path / "old"
    shutil.copytree(fitted, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["config"]["embedder"] = None  # as a run from before the change stored it
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert config_from_manifest(old).embedder == LEGACY_EMBEDDER
    assert run_embedder_name(RunDir(old)) == LEGACY_EMBEDDER
    assert config_from_manifest(old, {"embedder": DEFAULT_EMBEDDER}).embedder == DEFAULT_EMBEDDER  # a flag wins
    result = Pipeline(old, config_from_manifest(old, own_prompts=True)).run()
    redone = {t.name for t in result.stages if not t.skipped}
    assert "embed" in redone and "featurize" not in redone  # the fixture's vectors were minilm-q8's
    assert json.loads((old / "manifest.json").read_text())["config"]["embedder"] == LEGACY_EMBEDDER


def test_streamed_split_and_featurize_do_not_depend_on_batch_sizes(
        server: FakeOpenAIServer, inputs: Path, fitted: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Split and featurize stream through small batches (pieces 5 at a time, features of 7
    pieces at a time) yet write the same artefacts, with the same content hashes, as the
    fitted run that went in one batch each (row groups aside)."""
    from featdisco.stages import featurize as featurize_stage
    from featdisco.transcripts import split as split_module

    monkeypatch.setattr(split_module, "BATCH_ROWS", 5)
    monkeypatch.setattr(featurize_stage, "CHUNK_PIECES", 7)
    run_dir = tmp_path / "streamed"
    assert Pipeline(run_dir, config(server)).run([inputs]).complete
    for name in ("pieces.parquet", "features.parquet"):
        assert pq.read_table(run_dir / name).equals(pq.read_table(fitted / name)), name
        assert pq.ParquetFile(run_dir / name).metadata.num_row_groups > 1, name
    ours = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert ours["featurize"]["counts"]["features"] == pq.read_metadata(
        fitted / "features.parquet").num_rows
    assert not list(run_dir.glob(".*.tmp-*"))  # no temporary artefact left behind


def test_new_cluster_code_reruns_clustering_and_what_follows_from_the_caches(
        server: FakeOpenAIServer, inputs: Path, fitted: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run made by older stage code is not kept as if current: bumping a stage's
    STAGE_VERSION reruns that stage; downstream stages whose inputs come out the same are
    served by the caches, so no LLM call is repeated."""
    import shutil

    from featdisco.stages import cluster as cluster_stage

    run_dir = tmp_path / "copy"
    shutil.copytree(fitted, run_dir)
    monkeypatch.setattr(cluster_stage.ClusterStage, "version", cluster_stage.STAGE_VERSION + 1)
    before = server.total
    result = Pipeline(run_dir, config(server)).run([inputs])
    ran = [t.name for t in result.stages if not t.skipped]
    assert ran[:2] == ["read", "cluster"] and "featurize" not in ran and "embed" not in ran
    assert server.total == before  # same clusters: naming and rating answered from the cache
    assert pq.read_table(run_dir / "clusters.parquet").num_rows == 3 * K


def test_transform_sends_new_features_to_the_clusters_of_their_group(
        server: FakeOpenAIServer, fitted: Path, tmp_path: Path) -> None:
    new = write_jsonl(tmp_path / "new.jsonl", [
        {"id": f"n{i}", "model": "new-model", "messages": [
            {"role": "user", "content": f"A brand new request {i} never seen before"},
            {"role": "assistant", "content": f"<think>Fresh reasoning {i}</think>Fresh answer {i}"}]}
        for i in range(10)])
    est = FeatureDiscovery.load(fitted)
    act = est.transform_pieces(new, out_dir=tmp_path / "out")
    clusters = {c["cluster_id"]: c for c in est.clusters_.to_pylist()}
    feats = act.features.to_pylist()
    assert len(feats) == 10 * 3 * 10
    right = sum(1 for f in feats if clusters[f["cluster_id"]]["label"].endswith(GROUP_OF_FEATURE[f["text"]])
                and clusters[f["cluster_id"]]["kind"] == f["kind"])
    assert right / len(feats) > 0.95
    assert act.matrix.shape == (len(act.pieces), len(clusters))
    assert (act.matrix.getnnz(axis=1) >= 1).all()
    assert (tmp_path / "out" / "activations.npz").exists()


def test_estimator_fit_transform_save_load(server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:
    est = FeatureDiscovery(llm="openai", model="fake-rater", base_url=server.base_url, n_clusters=K,
                           run_dir=tmp_path / "run", concurrency=8)
    act = est.fit_transform([inputs])
    n_transcripts = len(set(pq.read_table(tmp_path / "run" / "pieces.parquet").column("transcript_id").to_pylist()))
    assert act.shape == (n_transcripts, est.clusters_.num_rows)
    saved = est.save(tmp_path / "saved")
    loaded = FeatureDiscovery.load(saved)
    assert loaded.clusters_.equals(est.clusters_)
    assert sorted(p.name for p in saved.iterdir()) == ["centroids_response.npy", "centroids_thought.npy",
                                                       "centroids_user.npy", "clusters.parquet",
                                                       "manifest.json", "prompts"]


def test_bad_config_is_a_clear_error(server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(FeatdiscoError, match=r"unknown LLM backend|unknown backend"):
        Pipeline(tmp_path / "a", PipelineConfig(llm="nope")).run([inputs])
    with pytest.raises(FeatdiscoError, match=r"--clusters 5000 is more than the \d+ distinct"):
        Pipeline(tmp_path / "b", config(server, n_clusters=5000)).run([inputs])
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"messages": [{"role": "user", "content": ""}]}])
    with pytest.raises(FeatdiscoError, match=r"empty\.jsonl: no user, thought or response text"):
        Pipeline(tmp_path / "c", config(server)).run([empty])


def test_a_run_says_which_files_it_skipped_and_why(server: FakeOpenAIServer, inputs: Path,
                                                     tmp_path: Path) -> None:
    """Under --skip-bad a run's summary and `status` name each skipped file and count skipped
    records, as `split` does: a skip is never a silent shortfall in the pieces."""
    import shutil

    from typer.testing import CliRunner

    from featdisco.cli import app
    from featdisco.transcripts.read import ReadOptions

    folder = tmp_path / "in"
    shutil.copytree(inputs, folder)
    (folder / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    with (folder / "reasoning.jsonl").open("a") as f:
        f.write("{not json\n")
    Pipeline(tmp_path / "r", config(server)).run([folder], read_options=ReadOptions(skip_bad=True))
    status = CliRunner().invoke(app, ["status", str(tmp_path / "r")])
    assert status.exit_code == 0, status.output
    assert "skipped files: 1" in status.output and "broken.jsonl.gz" in status.output
    assert "skipped bad records:" in status.output


# ---------------------------------------------------------------- kill -9 and resume


def _cli_run(server: FakeOpenAIServer, inputs: Path, run_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
    return subprocess.Popen(
        [sys.executable, "-m", "featdisco", "run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai",
         "--model", "fake-rater", "--base-url", server.base_url, "--clusters", str(K), "--concurrency",
         str(CONCURRENCY),
         "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=interactive_sigint)


def _stages_done(run_dir: Path) -> set[str]:
    try:
        return set(json.loads((run_dir / "manifest.json").read_text())["stages"])
    except (OSError, ValueError, KeyError):
        return set()


@pytest.mark.parametrize("kill_after", ["featurize-midway", "featurize", "embed", "cluster", "name"])
def test_kill_at_each_stage_then_resume(server: FakeOpenAIServer, inputs: Path, fitted: Path,
                                        tmp_path: Path, kill_after: str) -> None:
    slow = FakeOpenAIServer(pipeline_handler, latency=0.05).start()
    try:
        run_dir = tmp_path / "run"
        proc = _cli_run(slow, inputs, run_dir)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if kill_after == "featurize-midway" and slow.total >= 10:
                break
            if kill_after in _stages_done(run_dir):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first_hits = Counter(slow.hits)
        done_before = _stages_done(run_dir)
        resumed = _cli_run(slow, inputs, run_dir)
        _out, err = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, err
        # No request that had been answered was sent again: only those in flight at the
        # kill (at most --concurrency of them) may be repeated.
        again = [k for k, n in slow.hits.items() if n > 1]
        assert len(again) <= CONCURRENCY, f"{len(again)} requests sent twice, e.g. {again[:2]}"
        assert all(n <= 2 for n in slow.hits.values())
        assert sum(first_hits.values()) > 0
        manifest = json.loads((run_dir / "manifest.json").read_text())
        for stage in done_before - {"read"}:
            assert manifest["stages"][stage]["finished_at"] <= manifest["updated"]
        # The resumed result equals the uninterrupted one.
        got = pq.read_table(run_dir / "clusters.parquet").select(["cluster_id", "kind", "size", "label", "interest"])
        want = pq.read_table(fitted / "clusters.parquet").select(["cluster_id", "kind", "size", "label", "interest"])
        assert got.equals(want)
        np.testing.assert_array_equal(np.load(run_dir / "centroids_user.npy"), np.load(fitted / "centroids_user.npy"))
    finally:
        slow.stop()


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_and_sigterm_stop_cleanly_and_say_so(inputs: Path, tmp_path: Path,
                                                    sig: int, code: int, said: str) -> None:
    """Ctrl-C, and SIGTERM as `timeout` and Slurm send it, stop a run mid-featurize with a
    message, leave no half-written artefact, and free the directory for the rerun."""
    slow = FakeOpenAIServer(pipeline_handler, latency=0.05).start()
    try:
        run_dir = tmp_path / "run"
        proc = _cli_run(slow, inputs, run_dir)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and slow.total < 10:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()}"
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert f"featdisco: {said}; finished work is kept" in err
        assert "Traceback" not in err
        assert not list(run_dir.glob(".*.tmp-*"))
        resumed = _cli_run(slow, inputs, run_dir)
        _out, err = resumed.communicate(timeout=180)
        assert resumed.returncode == 0, err
    finally:
        slow.stop()


def test_a_second_run_in_the_same_directory_is_refused_before_it_spends(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:
    from tests.test_run import _hold_lock

    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    holder = _hold_lock(run_dir)
    before = server.total
    try:
        with pytest.raises(FeatdiscoError, match="another featdisco process"):
            Pipeline(run_dir, config(server)).run([inputs])
    finally:
        holder.kill()
        holder.wait()
    assert server.total == before and not (run_dir / "pieces.parquet").exists()


def test_bad_input_on_a_first_run_leaves_no_half_made_run(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """A first run that stops at its input (here a malformed line) leaves no run folder
    behind; a folder that already held something keeps it."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n')
    run_dir = tmp_path / "new-run"
    with pytest.raises(FeatdiscoError, match=r"bad\.jsonl, line 1"):
        Pipeline(run_dir, config(server)).run([bad])
    assert not run_dir.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FeatdiscoError):
        Pipeline(mine, config(server)).run([bad])
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_cli_status_and_transform(server: FakeOpenAIServer, fitted: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featdisco.cli import app

    status = CliRunner().invoke(app, ["status", str(fitted)])
    assert status.exit_code == 0, status.output
    for stage in ("read", "split", "featurize", "embed", "cluster", "name", "merge", "rate"):
        assert stage in status.output
    assert "done" in status.output and "not run" not in status.output
    assert "peak MiB" in status.output
    manifest = json.loads((fitted / "manifest.json").read_text())
    assert all(rec["peak_rss_mib"] > 0 for rec in manifest["stages"].values())  # each stage's own peak
    new = write_jsonl(tmp_path / "new.jsonl", [
        {"id": "x1", "messages": [{"role": "user", "content": "Something else entirely"},
                                  {"role": "assistant", "content": "A reply"}]}])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["transform", str(fitted), str(new), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "2 pieces, 20 features; 2 pieces activate" in result.output
    assert (out / "activations.npz").exists() and (out / "assignments.parquet").exists()
    # into the fitted run itself: refused, and the fitted run untouched
    before = (fitted / "pieces.parquet").read_bytes()
    onto = CliRunner().invoke(app, ["transform", str(fitted), str(new), "-o", str(fitted), "-q"])
    assert onto.exit_code != 0 and "holds a fitted run" in str(onto.exception)
    assert (fitted / "pieces.parquet").read_bytes() == before
    missing = CliRunner().invoke(app, ["status", str(tmp_path / "nowhere")])
    assert "nowhere does not exist" in str(missing.exception) and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("llm,key", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_cli_dry_run_needs_no_api_key_and_leaves_no_run_dir(
        llm: str, key: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An estimate sends nothing, so a user pricing a run before getting a key gets it; and a
    dry run into a new --run-dir leaves no directory behind. A real run without the key still
    stops at once, before anything is read."""
    from typer.testing import CliRunner

    from featdisco.cli import app

    monkeypatch.delenv(key, raising=False)
    for name in ("FEATDISCO_BASE_URL", "FEATDISCO_MODEL"):
        monkeypatch.delenv(name, raising=False)
    dry = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "d"),
                                   "--llm", llm, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run, featurize:" in dry.output and "cost $" in dry.output
    assert not (tmp_path / "d").exists()
    # through main(), as the command line runs it: a refused command leaves no empty run dir
    from featdisco.cli import main

    monkeypatch.setattr(sys, "argv", ["featdisco", "run", str(inputs), "--run-dir", str(tmp_path / "r"),
                                      "--llm", llm])
    with pytest.raises(SystemExit) as real:
        main()
    assert real.value.code == 2 and key in capsys.readouterr().err
    assert not (tmp_path / "r").exists(), list((tmp_path / "r").iterdir())


def test_cli_dry_run_estimates_from_the_pieces_and_spends_nothing(
        server: FakeOpenAIServer, inputs: Path, fitted: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --dry-run` splits, then estimates featurize from pieces.parquet read in chunks
    (3 pieces at a time here), sending nothing; on the fitted run's cache every call is
    already paid for, and the estimate says so."""
    import shutil

    from typer.testing import CliRunner

    import featdisco.pipeline as pipeline_module
    from featdisco.cli import app

    monkeypatch.setattr(pipeline_module, "DRY_RUN_BATCH", 3)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    n_pieces = pq.read_metadata(fitted / "pieces.parquet").num_rows
    args = ["--llm", "openai", "--model", "fake-rater", "--base-url", server.base_url]
    before = server.total
    fresh = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "dry"),
                                     "--dry-run", *args])
    assert fresh.exit_code == 0, fresh.output
    assert f"dry run, featurize: {n_pieces} calls" in fresh.output
    assert "0 already cached" in fresh.output
    assert not (tmp_path / "dry" / "features.parquet").exists()
    run_dir = tmp_path / "copy"
    shutil.copytree(fitted, run_dir)
    again = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(run_dir),
                                     "--dry-run", *args])
    assert again.exit_code == 0, again.output
    assert " 0 to send" in again.output and "already cached" in again.output
    # other transcripts against a finished run: estimated, and the run left as it was
    kept = {name: (run_dir / name).read_bytes() for name in ("pieces.parquet", "manifest.json")}
    other = write_jsonl(tmp_path / "other.jsonl", [
        {"id": "o1", "messages": [{"role": "user", "content": "Entirely new question"},
                                  {"role": "assistant", "content": "An entirely new answer"}]}])
    new = CliRunner().invoke(app, ["run", str(other), "--run-dir", str(run_dir), "--dry-run", *args])
    assert new.exit_code == 0, new.output
    assert "dry run, featurize: 2 calls, 2 unique, 0 already cached" in new.output
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept
    assert server.total == before


def test_cli_run_stopped_at_the_cost_cap_says_so_and_exits_3(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces held back at --max-cost are not failures, the summary says how many were not
    sent, no outputs are announced that do not exist, and the exit status tells a script
    the run is incomplete; a rerun with a higher cap finishes it."""
    from typer.testing import CliRunner

    from featdisco.cli import app

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run_dir = tmp_path / "capped"
    args = ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai", "--model",
            "gpt-4o-mini", "--base-url", server.base_url, "--clusters", str(K),
            "--concurrency", "1"]
    before = server.total
    capped = CliRunner().invoke(app, [*args, "--max-cost", "0.0003"])
    assert capped.exit_code == 3, capped.output
    assert "not sent: a cost limit (--max-cost or --budget) reached" in capped.output and "run incomplete" in capped.output
    assert "outputs in" not in capped.output and not (run_dir / "clusters.parquet").exists()
    counts = json.loads((run_dir / "manifest.json").read_text())["stages"]["featurize"]["counts"]
    assert counts["not_sent"] > 0 and counts["failed"] == 0
    assert counts["ok"] == server.total - before  # what was sent, and only that
    done = CliRunner().invoke(app, [*args, "--max-cost", "10"])
    assert done.exit_code == 0, done.output
    assert (run_dir / "clusters.parquet").exists()


def test_transform_of_fitted_transcripts_costs_no_calls(server: FakeOpenAIServer, inputs: Path,
                                                        fitted: Path, tmp_path: Path) -> None:
    """transform shares the fitted run's LLM cache: pieces seen at fit time are free, and
    they land in the clusters fit put them in."""
    before = server.total
    act = FeatureDiscovery.load(fitted).transform_pieces([inputs], out_dir=tmp_path / "again")
    assert server.total == before
    fit_assign = dict(zip(pq.read_table(fitted / "assignments.parquet").column("feature_id").to_pylist(),
                          pq.read_table(fitted / "assignments.parquet").column("cluster_id").to_pylist(),
                          strict=True))
    again = act.features.to_pylist()
    assert len(again) == len(fit_assign)
    assert all(fit_assign[f["feature_id"]] == f["cluster_id"] for f in again)


def test_cluster_members_match_plain_lists() -> None:
    """Naming and examples read each cluster's members from Arrow one cluster at a time;
    they must see what per-cluster Python lists would give, ties and non-ASCII included."""
    import random

    import pyarrow as pa

    from featdisco.stages.members import ClusterMembers

    rng = random.Random(0)
    vocab = ["Uses markdown", "Émojis", "apple", "Zebra", "Polite tone", "ünïcode", "a", "b"]
    texts = [rng.choice(vocab) for _ in range(500)]
    cids = [rng.randrange(7) for _ in range(500)]  # cluster 7 of 8 stays empty
    members = ClusterMembers(pa.chunked_array([texts[:200], texts[200:]]), pa.chunked_array([cids]), 8)
    plain: list[list[str]] = [[] for _ in range(8)]
    for t, c in zip(texts, cids, strict=True):
        plain[c].append(t)
    assert len(members) == 8
    for c in range(8):
        assert members[c] == sorted(set(plain[c]))
        counts: dict[str, int] = {}
        for t in plain[c]:
            counts[t] = counts.get(t, 0) + 1
        expect = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
        assert members.most_common(c, 3) == expect
    assert members[7] == [] and members[-1] == [] and members[1:3] == [members[1], members[2]]
