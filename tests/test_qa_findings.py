"""What a new user met trying featdisco end to end (the QA pass): each test is one finding
that was fixed, so it stays fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import fake_api_key, pipeline_server  # noqa: F401  (fixtures: api_key, server)
from tests.test_pipeline import K, inputs  # noqa: F401  (fixtures)


def _chat_file(path: Path) -> Path:
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello there, how are you?"},
                                             {"role": "assistant", "content": "Fine, thanks for asking."}]}) + "\n")
    return path


@pytest.mark.parametrize("args", [
    ["run", "{chats}", "--run-dir", "{file}", "--llm", "openai", "--model", "gpt-4o-mini"],
    ["run", "{chats}", "--run-dir", "{file}", "--dry-run"],
])
def test_a_file_where_a_run_directory_goes_is_a_one_line_error(tmp_path: Path, args: list[str]) -> None:
    chats = _chat_file(tmp_path / "chats.jsonl")
    file = tmp_path / "notes.txt"
    file.write_text("my notes\n")
    proc = subprocess.run([sys.executable, "-m", "featdisco", *[a.format(chats=chats, file=file) for a in args]],
                          capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": "sk-test"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featdisco: error: ") and f"{file} is a file, not a" in lines[0]
    assert file.read_text() == "my notes\n"
    with pytest.raises(FeatdiscoError, match="is a file, not a run directory"):
        RunDir(file)


def test_compare_by_transcript_counts_the_transcripts_left_out(tmp_path: Path) -> None:
    """10 transcripts of 2 pieces have no 'arm': --unit transcript says 10 transcripts, not 20 pieces."""
    pieces = []
    for t in range(30):
        meta: dict[str, object] = {"arm": "a" if t % 2 else "b"} if t >= 10 else {}
        pieces.append(PlantedPiece(f"t{t}", 0, "user", [t % 2], metadata=meta))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", [2 + t % 2], metadata=meta))
    run = write_run(tmp_path / "run", pieces, [("user", "U0"), ("user", "U1"), ("response", "R0"),
                                               ("response", "R1")])
    by_piece = CliRunner().invoke(app, ["compare", str(run), "--by", "arm"])
    assert by_piece.exit_code == 0, by_piece.output
    assert "20 pieces have no 'arm' and are left out" in by_piece.output
    by_transcript = CliRunner().invoke(app, ["compare", str(run), "--by", "arm", "--unit", "transcript"])
    assert by_transcript.exit_code == 0, by_transcript.output
    assert "10 transcripts have no 'arm' and are left out" in by_transcript.output


def test_a_relative_price_file_is_found_by_a_rerun_from_another_directory(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """`run --prices prices.json` (relative) is kept by the run; a plain rerun from elsewhere
    (flag > manifest) must still find the file, not stop with 'price file prices.json does not exist'."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "prices.json").write_text(json.dumps({"my-org/model": {"input": 0.5, "output": 1.5}}))
    run_dir = tmp_path / "run"
    monkeypatch.chdir(work)
    first = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai", "--model",
                                     "my-org/model", "--base-url", server.base_url, "--clusters", str(K),
                                     "--prices", "prices.json", "--max-cost", "5"])
    assert first.exit_code == 0, first.output
    monkeypatch.chdir(elsewhere)
    sent = server.total
    again = CliRunner().invoke(app, ["run", "--run-dir", str(run_dir), "--max-cost", "5"])
    assert again.exit_code == 0, f"{again.output}\n{again.exception!r}"
    assert server.total == sent  # nothing changed: every stage up to date, nothing sent


NEW_CLUSTER_COLUMNS = ["new_cluster", "label", "description", "kind", "size", "distinct", "pieces", "transcripts",
                       "examples", "nearest_cluster_id", "nearest_label", "nearest_similarity", "status"]


def test_find_new_with_nothing_new_has_the_columns_it_has_when_something_is(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """`new[["label", "examples"]]` must not KeyError just because the data held nothing new."""
    from featdisco import FeatureDiscovery
    from tests.test_estimator import _data

    data = _data(tmp_path)
    est = FeatureDiscovery(llm="openai", model="gpt-4o-mini", base_url=server.base_url, n_clusters=3,
                           run_dir=tmp_path / "run")
    est.fit(data)
    new = est.find_new(data)  # the fitted data itself: every feature has its cluster
    assert new.empty
    assert list(new.columns) == NEW_CLUSTER_COLUMNS
    assert new[["label", "examples", "nearest_label"]].empty


@pytest.mark.parametrize("alpha", ["2", "0", "-1"])
def test_compare_refuses_an_alpha_that_is_not_a_rate(tmp_path: Path, alpha: str) -> None:
    from tests.analysis.test_cli import small_run

    run = small_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["compare", str(run), "--by", "model", "--alpha", alpha])
    assert isinstance(result.exception, FeatdiscoError), result.output
    assert "a false discovery rate is between 0 and 1" in str(result.exception)
    assert not (run / "analysis_compare_model.parquet").exists()  # nothing written from a wrong alpha


def test_run_refuses_a_transform_output_folder(server: FakeOpenAIServer, inputs: Path,  # noqa: F811
                                               tmp_path: Path) -> None:
    """`run --run-dir` on a transform's output used to fit there, leaving a folder that is half
    transform (fitted_run, new_clusters.parquet, its totals) and half a new fit."""
    fitted, out = tmp_path / "fitted", tmp_path / "new"
    runner = CliRunner()
    fit = runner.invoke(app, ["run", str(inputs), "--run-dir", str(fitted), "--llm", "openai", "--model",
                              "gpt-4o-mini", "--base-url", server.base_url, "--clusters", str(K)])
    assert fit.exit_code == 0, fit.output
    moved = runner.invoke(app, ["transform", str(fitted), str(inputs), "-o", str(out)])
    assert moved.exit_code == 0, moved.output
    before, sent = (out / "manifest.json").read_text(), server.total
    again = runner.invoke(app, ["run", str(inputs), "--run-dir", str(out)])
    assert isinstance(again.exception, FeatdiscoError), again.output
    assert "holds a `featdisco transform` output" in str(again.exception)
    assert server.total == sent and (out / "manifest.json").read_text() == before


def test_a_scan_stopped_at_the_budget_says_how_to_raise_it_and_that_way_works(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    """scan has no --budget: 'rerunning with a higher --budget' alone sent users to an option
    scan refuses; the message names the command that sets the run's budget, which then works."""
    run = tmp_path / "run"
    runner = CliRunner()
    fit = runner.invoke(app, ["run", str(inputs), "--run-dir", str(run), "--llm", "openai", "--model",
                              "gpt-4o-mini", "--base-url", server.base_url, "--clusters", str(K), "--budget", "5"])
    assert fit.exit_code == 0, fit.output
    assert runner.invoke(app, ["run", "--run-dir", str(run), "--budget", "0.000001"]).exit_code == 0
    scan = ["scan", str(run), "--question", "Does it mention the remaining token budget?", "--kind", "user"]
    stopped = runner.invoke(app, scan)
    assert isinstance(stopped.exception, FeatdiscoError) and stopped.exception.exit_code == 3
    assert "`featdisco run --run-dir RUN --budget USD`" in str(stopped.exception)
    assert runner.invoke(app, ["scan", str(run), "--budget", "5"]).exit_code == 2  # scan indeed has none
    asked = runner.invoke(app, ["ask", str(run), "Which model apologises more?"])  # ask has none either
    assert isinstance(asked.exception, FeatdiscoError) and asked.exception.exit_code == 3
    assert "(scan, ask, score-labels and hierarchy, which have no --budget" in str(asked.exception)
    assert runner.invoke(app, ["run", "--run-dir", str(run), "--budget", "5"]).exit_code == 0
    done = runner.invoke(app, scan)
    assert done.exit_code == 0, done.output


def test_the_last_invocation_line_says_what_made_it(server: FakeOpenAIServer, inputs: Path,  # noqa: F811
                                                     tmp_path: Path) -> None:
    """A rerun with every stage up to date asks nothing of the LLM, so the 'last invocation'
    it prints is an earlier command's (here a scan's, in a real case score-labels' failures):
    the line names that command instead of passing its figures off as this run's."""
    run = tmp_path / "run"
    runner = CliRunner()
    fit = runner.invoke(app, ["run", str(inputs), "--run-dir", str(run), "--llm", "openai", "--model",
                              "gpt-4o-mini", "--base-url", server.base_url, "--clusters", str(K)])
    assert fit.exit_code == 0, fit.output
    scan = runner.invoke(app, ["scan", str(run), "--question", "Does it mention the remaining token budget?",
                               "--kind", "user"])
    assert scan.exit_code == 0, scan.output
    sent = server.total
    again = runner.invoke(app, ["run", "--run-dir", str(run)])
    assert again.exit_code == 0 and server.total == sent, again.output
    line = next(x for x in again.output.splitlines() if x.startswith("LLM, last invocation:"))
    assert line.endswith("(made by: scan)"), line
    status = runner.invoke(app, ["status", str(run), "--json"])
    assert json.loads(status.stdout)["llm_last"]["by"] == ["scan"]
    # an edit reruns stages (the merged cluster is named anew): its calls are the edit's, not run's
    clusters = pq.read_table(run / "clusters.parquet", columns=["cluster_id", "kind"]).to_pylist()
    a, b = [c["cluster_id"] for c in clusters if c["kind"] == "response"][:2]
    edit = runner.invoke(app, ["edit", str(run), "merge", str(a), str(b)])
    assert edit.exit_code == 0 and server.total > sent, edit.output
    status = runner.invoke(app, ["status", str(run), "--json"])
    assert json.loads(status.stdout)["llm_last"]["by"] == ["edit"]


def test_clusters_absent_from_a_transforms_data_are_not_said_to_be_from_fewer_than_1_transcripts() -> None:
    """find / the tables on a transform's output hide the fitted clusters that its new data never
    shows; 'drawn from fewer than 1 transcripts' was the note for that."""
    from featdisco.analysis.visibility import Visibility

    absent = Visibility(frozenset({3, 4}), frozenset({3, 4}), frozenset(), 1, False)
    assert absent.note() == "clusters hidden: 2 found in no transcript (--show-private shows them)"
    rare = Visibility(frozenset({3}), frozenset({3}), frozenset(), 5, False)
    assert rare.note() == "clusters hidden: 1 drawn from fewer than 5 transcripts (--show-private shows them)"


def test_a_bad_value_to_an_edit_subcommand_points_at_a_help_command_a_person_can_type(tmp_path: Path) -> None:
    """`edit RUN split 6 --k 1` pointed at "edit {run_dir} split --help", a metavar in braces."""
    run = write_run(tmp_path / "run", [PlantedPiece("t0", 0, "user", [0])], [("user", "Greets")])
    proc = subprocess.run([sys.executable, "-m", "featdisco", "edit", str(run), "split", "0", "--k", "1"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "{" not in proc.stderr and "edit RUN_DIR split --help`" in proc.stderr, proc.stderr


def _chats(folder: Path, n: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chats.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": f"Request {i}: please help me plan meal number {i * 7}."},
        {"role": "assistant", "content": f"Sure, here is plan {i}: start carefully, then finish."}]}) + "\n"
        for i in range(n)))
    return path


@pytest.mark.parametrize(("flag", "value", "error"), [("--embedder", "nope", "unknown embedder 'nope'"),
                                                     ("--executor", "bogus", "unknown executor 'bogus'")])
def test_a_mistyped_embedder_or_executor_is_refused_before_it_is_recorded_or_anything_is_spent(
        server: FakeOpenAIServer, tmp_path: Path, flag: str, value: str, error: str) -> None:
    """`run --embedder nope` featurized first and wrote 'nope' into the manifest before the embed
    stage refused it: the run then said `embedder: nope` (its vectors were minilm-q8's), and every
    later `run` and `find` on it failed until the manifest was edited by hand. `--executor bogus`
    on an up-to-date run exited 0 and recorded 'bogus', so the next rerun that had work failed."""
    chats, run = _chats(tmp_path / "in"), tmp_path / "run"
    runner = CliRunner()
    llm = ["--llm", "openai", "--model", "gpt-4o-mini", "--base-url", server.base_url, "--clusters", "3"]
    fit = runner.invoke(app, ["run", str(chats), "--run-dir", str(run), *llm])
    assert fit.exit_code == 0, fit.output
    before, sent = (run / "manifest.json").read_text(), server.total
    typo = runner.invoke(app, ["run", "--run-dir", str(run), flag, value])
    assert isinstance(typo.exception, FeatdiscoError), typo.output
    assert error in str(typo.exception)
    assert (run / "manifest.json").read_text() == before and server.total == sent
    assert runner.invoke(app, ["find", str(run), "meal plans"]).exit_code == 0
    assert runner.invoke(app, ["run", "--run-dir", str(run)]).exit_code == 0
    fresh = runner.invoke(app, ["run", str(chats), "--run-dir", str(tmp_path / "new"), *llm, flag, value])
    assert isinstance(fresh.exception, FeatdiscoError), fresh.output
    assert server.total == sent and not (tmp_path / "new").exists()  # a refused command creates nothing


def test_a_stage_stopped_at_the_cost_cap_is_not_logged_as_done(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """At the --max-cost cap featurize had sent 1 of 60 calls, yet its progress line said
    "featurize: done (0.1s)" above a summary that called it incomplete."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-org/dear-model": {"input": 1000, "output": 3000}}))
    result = CliRunner().invoke(app, ["run", str(_chats(tmp_path / "in")), "--run-dir", str(tmp_path / "run"),
                                      "--llm", "openai", "--model", "my-org/dear-model", "--base-url",
                                      server.base_url, "--prices", str(prices), "--max-cost", "2"])
    assert result.exit_code == 3, result.output  # incomplete: the cap held calls back
    lines = result.output.splitlines()
    assert any(x.startswith("featurize: incomplete (") for x in lines), result.output
    assert not any(x.startswith("featurize: done") for x in lines)


def test_a_run_counts_the_empty_replies_it_drops_as_split_does(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """`featdisco split` says "empty pieces dropped: response 2"; `featdisco run` on the same
    file (two replies cut off with content null) dropped them without a word, in the run
    summary and in status."""
    folder = tmp_path / "in"
    chats = _chats(folder, n=12)
    with chats.open("a") as f:
        for i in range(2):
            f.write(json.dumps({"id": f"cut{i}", "messages": [
                {"role": "user", "content": f"Write a very long essay number {i}."},
                {"role": "assistant", "content": None}]}) + "\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(folder), "--run-dir", str(run), "--llm", "openai", "--model",
                                      "gpt-4o-mini", "--base-url", server.base_url, "--rate-batch", "0"])
    assert result.exit_code == 0, result.output
    assert "empty pieces dropped: response 2" in result.output.splitlines()
    status = CliRunner().invoke(app, ["status", str(run)])
    assert "empty pieces dropped: response 2" in status.output.splitlines(), status.output


def test_status_shows_per_kind_clusters_as_the_flag_takes_them(tmp_path: Path) -> None:
    """`run --clusters user=3,response=4` then `status` printed "clusters: {'response': 4, 'user': 3}"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"n_clusters": {"response": 4, "user": 3}},
                                                   "stages": {}}))
    result = CliRunner().invoke(app, ["status", str(run)])
    assert result.exit_code == 0, result.output
    assert "clusters: user=3,response=4" in result.output and "{" not in result.output.splitlines()[1]


def test_featurize_failures_are_counted_in_words_not_as_a_python_dict(server: FakeOpenAIServer,
                                                                      tmp_path: Path) -> None:
    """The progress line said "featurize: 7 of 20 pieces failed ({'bad-request': 6, 'invalid-json': 1})"."""
    from tests.fakes.openai_server import FakeRequest, Reply
    from tests.pipeline_fakes import pipeline_handler

    def handler(req: FakeRequest) -> Reply:
        if "meal number 0." in json.dumps(req.body.get("messages")):  # one piece's featurize call fails
            return Reply(status=400, raw_body=b'{"error": {"message": "bad", "type": "invalid_request_error"}}')
        return pipeline_handler(req)

    server.set_handler(handler)
    result = CliRunner().invoke(app, ["run", str(_chats(tmp_path / "in", n=8)), "--run-dir", str(tmp_path / "run"),
                                      "--llm", "openai", "--model", "gpt-4o-mini", "--base-url", server.base_url,
                                      "--rate-batch", "0"])
    assert result.exit_code == 3, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("featurize: 1 of 16 pieces failed"))
    assert line == "featurize: 1 of 16 pieces failed (bad-request 1); a rerun retries them", line


def test_a_run_over_a_fitted_directory_with_other_transcripts_says_it_replaced_the_fit(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    """`run NEW --run-dir OLD_RUN` re-fitted on the new transcripts with nothing said but
    "read: done"; the same inputs again say nothing."""
    other = inputs / "reasoning.jsonl"  # a part of the inputs: other transcripts
    run = tmp_path / "run"
    flags = ["--run-dir", str(run), "--llm", "openai", "--model", "gpt-4o-mini", "--base-url", server.base_url,
             "--clusters", str(K)]
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(inputs), *flags])
    assert first.exit_code == 0, first.output
    same = runner.invoke(app, ["run", str(inputs), *flags])
    assert same.exit_code == 0 and "had been fitted on other transcripts" not in same.output
    n_before = json.loads((run / "manifest.json").read_text())["stages"]["read"]["counts"]["transcripts"]
    again = runner.invoke(app, ["run", str(other), *flags])
    assert again.exit_code == 0, again.output
    n_now = json.loads((run / "manifest.json").read_text())["stages"]["read"]["counts"]["transcripts"]
    assert n_now != n_before
    assert (f"note: {run} had been fitted on other transcripts ({n_before}); this run replaced that fit "
            f"with one on these ({n_now}). Pass a new --run-dir to keep both.") in again.output.replace("\n", " ")
