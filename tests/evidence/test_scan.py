"""``featdisco scan`` on planted data with the scripted fake: the measured prevalence is the
planted truth, groups that differ (30% vs 5%) are told apart, and a rerun sends nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import BROKEN, INVENTED_QUOTE, PLANTED, pipeline_handler

N = 200  # thoughts per model
RATES = {"a": 0.30, "b": 0.05}  # the planted share of thoughts that track their token budget


def planted_pieces() -> list[PlantedPiece]:
    pieces = []
    for model, rate in RATES.items():
        hits = round(N * rate)
        for i in range(N):
            text = (f"Thought {i} of {model}. I must mind my Remaining  Token Budget before I answer."
                    if i < hits else f"Thought {i} of {model}. Let me just answer the question directly.")
            pieces.append(PlantedPiece(f"{model}{i}", 1, "thought", [], model=model, text=text,
                                       metadata={"source": f"src-{model}"}))
            # a user turn that says the phrase too: a --kind thought scan must not count it
            pieces.append(PlantedPiece(f"{model}{i}", 0, "user", [], model=model,
                                       text=f"User {i} asks about the {PLANTED}."))
    return pieces


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", planted_pieces(), [("thought", "Tracks its remaining token budget")])


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


def scan(srv: FakeOpenAIServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["scan", *args, "--llm", "openai", "--base-url", srv.base_url,
                                      "--model", "fake", "--concurrency", "16", "-q"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_prevalence_equals_the_planted_truth_and_groups_separate(run: Path, server: FakeOpenAIServer) -> None:
    code, out = scan(server, str(run), "--question", "Does the model reason about its remaining token budget?",
                     "--kind", "thought", "--name", "budget", "--by", "model")
    assert code == 0, out
    assert "prevalence 17.5% (70 of 400 pieces answered)" in out
    table = pq.read_table(run / "scan_budget.parquet")
    assert table.schema.names == ["piece_id", "transcript_id", "kind", "answer", "quote", "span", "verified",
                                  "reason", "status"]
    rows = table.to_pylist()
    assert len(rows) == 2 * N and {r["kind"] for r in rows} == {"thought"}
    assert sum(r["answer"] for r in rows) == 70 and all(r["status"] == "ok" for r in rows)
    texts = {p: t for p, t in zip(*pq.read_table(run / "pieces.parquet", columns=["piece_id", "text"])
                                  .to_pydict().values(), strict=True)}
    for r in rows:
        if r["answer"]:  # the quote is verified and its span is the phrase as the piece writes it
            assert r["verified"] is True
            span = texts[r["piece_id"]][r["span"]["start"]:r["span"]["end"]]
            assert " ".join(span.lower().split()) == PLANTED
        else:
            assert r["quote"] == "" and r["verified"] is None and r["span"] is None
    by = pq.read_table(run / "scan_budget_by_model.parquet").to_pandas().set_index("group")
    assert list(by.columns) == ["n", "positives", "rate", "ci_low", "ci_high", "test", "p_value", "q_value"]
    assert by.loc["a", "rate"] == pytest.approx(0.30) and by.loc["b", "rate"] == pytest.approx(0.05)
    assert by.loc["a", "ci_low"] > by.loc["b", "ci_high"]  # the intervals do not overlap
    assert (by["q_value"] < 0.001).all() and set(by["test"]) == {"fisher"}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["scans"]["budget"]["positives"] == 70 and manifest["scans"]["budget"]["n"] == 400
    # the run's totals count the scan's calls: an answer for each piece, a quote for each of the 70 yeses
    assert manifest["llm_by_analysis"]["scan"]["calls"] == 400 + 70

    # a rerun sends no call: every answer comes from the run's cache
    sent = server.total
    code, out2 = scan(server, str(run), "--question", "Does the model reason about its remaining token budget?",
                      "--kind", "thought", "--name", "budget", "--by", "model")
    assert code == 0 and server.total == sent
    assert "prevalence 17.5%" in out2


def test_metadata_groups_scale_answers_and_sampling(run: Path, server: FakeOpenAIServer) -> None:
    code, out = scan(server, str(run), "--question", "How much does it reason about its token budget?",
                     "--kind", "thought", "--answer", "scale:1-10", "--by", "source", "--sample", "100",
                     "--name", "scaled")
    assert code == 0, out
    rows = pq.read_table(run / "scan_scaled.parquet").to_pylist()
    assert len(rows) == 100 and {r["answer"] for r in rows} <= {1, 9}
    by = pq.read_table(run / "scan_scaled_by_source.parquet").to_pandas()
    assert set(by["group"]) == {"src-a", "src-b"} and by["n"].sum() == 100
    assert by["positives"].sum() == sum(r["answer"] == 9 for r in rows)
    # a scale's "prevalence" says what counted as positive: the user chose no threshold
    assert "; counted as positive: an answer above 5.5 on 1-10" in out
    code, out = scan(server, str(run), "--question", "Does it mind its budget?", "--kind", "thought",
                     "--answer", "labels:minds,ignores", "--sample", "20", "--name", "labelled")
    assert code == 0 and "; counted as positive: the answer 'minds'" in out, out


def test_dry_run_sends_nothing_and_writes_nothing(run: Path, server: FakeOpenAIServer) -> None:
    code, out = scan(server, str(run), "--question", "Anything?", "--kind", "user", "--dry-run")
    assert code == 0 and "400 calls" in out
    assert server.total == 0 and not list(run.glob("scan_*"))


def test_failed_calls_exit_3_and_say_how_many_and_why(tmp_path: Path, server: FakeOpenAIServer) -> None:
    pieces = [PlantedPiece(f"t{i}", 0, "response", [], text=f"Answer {i}: " + (
        BROKEN if i < 3 else f"my {PLANTED}, as I invent things" if i < 5 else "fine")) for i in range(10)]
    run = write_run(tmp_path / "r", pieces, [("response", "unused")])
    code, out = scan(server, str(run), "--question", "Budget?", "--name", "q")
    assert code == 3
    # 10 answers asked, 3 of them broken; then the quote of each of the 2 yeses
    assert "3 of 12 LLM calls failed (invalid-json 3)" in out and "Rerun the same command to retry them" in out
    rows = pq.read_table(run / "scan_q.parquet").to_pylist()
    assert sum(r["status"] == "failed: invalid-json" for r in rows) == 3
    invented = [r for r in rows if r["quote"] == INVENTED_QUOTE]
    assert len(invented) == 2 and all(r["verified"] is False for r in invented)  # flagged, not evidence
    assert "prevalence 28.6% (2 of 7 pieces answered)" in out


def test_bad_arguments_are_clear_errors(run: Path, server: FakeOpenAIServer) -> None:
    from featdisco.errors import FeatdiscoError

    for args, msg in ((["--question", "Q", "--answer", "scale:5-1"], "LOW < HIGH"),
                      (["--question", "Q", "--kind", "robot"], "--kind 'robot'"),
                      (["--question", "Q", "--by", "nosuch"], "no piece column or metadata key named 'nosuch'"),
                      ([], "give --question TEXT or --cluster ID"),
                      (["--cluster", "7"], "cluster 7 is not in")):
        with pytest.raises(FeatdiscoError, match=msg):
            scan(server, str(run), *args)
    assert server.total == 0


def test_an_unknown_by_names_the_columns_scan_can_group_by(run: Path, server: FakeOpenAIServer) -> None:
    """The error lists the run's piece columns (model, ...), as compare's does, not only the
    few scan loads, nor the request text it adds as context."""
    from featdisco.errors import FeatdiscoError

    with pytest.raises(FeatdiscoError) as err:
        scan(server, str(run), "--question", "Q", "--by", "vendor")
    columns = str(err.value).split("columns: ", 1)[1].split(";")[0].split(", ")
    on_disk = set(pq.ParquetFile(run / "pieces.parquet").schema_arrow.names) - {"text", "metadata"}
    assert "model" in on_disk and set(columns) == on_disk  # "request" is not a column of the run
    assert server.total == 0

def test_a_second_question_alike_in_its_first_words_keeps_the_first_scan(run: Path,
                                                                         server: FakeOpenAIServer) -> None:
    """Both questions name their scan "does_the_model_reason_about_its_remainin" (40 characters);
    the second used to replace the first's table and manifest entry without a word."""
    first = "Does the model reason about its remaining token budget?"
    second = "Does the model reason about its remaining context window?"
    code, out1 = scan(server, str(run), "--question", first, "--kind", "thought")
    assert code == 0, out1
    table1 = (run / "scan_does_the_model_reason_about_its_remainin.parquet").read_bytes()
    code, out2 = scan(server, str(run), "--question", second, "--kind", "thought")
    assert code == 0, out2
    assert (run / "scan_does_the_model_reason_about_its_remainin.parquet").read_bytes() == table1
    scans = json.loads((run / "manifest.json").read_text())["scans"]
    assert {v["question"] for v in scans.values()} == {first, second}
    name2 = next(k for k, v in scans.items() if v["question"] == second)
    assert out2.startswith(f"scan {name2}: {second}") and (run / f"scan_{name2}.parquet").exists()
    sent = server.total
    code, again = scan(server, str(run), "--question", first, "--kind", "thought")  # the same question: same name
    assert code == 0 and again.startswith("scan does_the_model_reason_about_its_remainin: ") and server.total == sent

def test_a_cluster_becomes_the_question(run: Path, server: FakeOpenAIServer) -> None:
    """--cluster ID asks whether each piece of the cluster's kind shows its labelled behaviour."""
    code, out = scan(server, str(run), "--cluster", "0")
    assert code == 0, out
    assert "scan cluster_0: Does this piece show the following behaviour: Tracks its remaining token budget?" in out
    assert "prevalence 17.5% (70 of 400 pieces answered)" in out  # thoughts only: the cluster's kind
    assert (run / "scan_cluster_0.parquet").exists()


def test_scan_transcripts_directly_into_a_run_dir(tmp_path: Path, server: FakeOpenAIServer) -> None:
    from tests.conftest import write_jsonl

    chats = write_jsonl(tmp_path / "chats.jsonl", [
        {"id": f"c{i}", "model": "m1" if i % 2 else "m2", "messages": [
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}" + (f", within my {PLANTED}." if i < 4 else ".")}]}
        for i in range(10)])
    out_dir = tmp_path / "scanned"
    code, out = scan(server, str(chats), "--run-dir", str(out_dir), "--kind", "response", "--question", "Budget?",
                     "--by", "model")
    assert code == 0, out
    assert "prevalence 40.0% (4 of 10 pieces answered)" in out
    by = pq.read_table(out_dir / "scan_budget_by_model.parquet").to_pandas().set_index("group")
    assert by.loc["m1", "positives"] + by.loc["m2", "positives"] == 4


def test_scan_into_a_run_dir_takes_the_reading_flags(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """scan INPUT... --run-dir reads transcripts with the flags split and run take (here a
    mapped table whose model comes from the file name)."""
    import csv

    table = tmp_path / "gpt-x.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "output"])
        for i in range(6):
            w.writerow([f"Question {i}?", f"Answer {i}" + (f", within my {PLANTED}." if i < 3 else ".")])
    out_dir = tmp_path / "mapped"
    code, out = scan(server, str(table), "--run-dir", str(out_dir), "--kind", "response", "--question", "Budget?",
                     "--map", "user=prompt,response=output", "--source-model-from", "filename", "--by", "model")
    assert code == 0, out
    assert "prevalence 50.0% (3 of 6 pieces answered)" in out
    by = pq.read_table(out_dir / "scan_budget_by_model.parquet").to_pandas()
    assert by["group"].tolist() == ["gpt-x"]


def test_a_run_dir_made_by_scan_keeps_its_llm_for_the_next_command(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """scan FILES --run-dir DIR --llm ... --base-url ... --model ... records the LLM as run
    does: status names it, and a second scan of DIR without LLM flags asks the same server
    (not the default provider or the local model)."""
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"id": f"c{i}", "model": "m", "messages": [
        {"role": "user", "content": f"Q{i}"},
        {"role": "assistant", "content": f"Answer {i}" + (f" within my {PLANTED}." if i < 2 else ".")}]}) + "\n"
        for i in range(4)))
    out_dir = tmp_path / "scanned"
    code, out = scan(server, str(chats), "--run-dir", str(out_dir), "--kind", "response", "--question", "Budget?")
    assert code == 0, out
    status = CliRunner().invoke(app, ["status", str(out_dir)])
    assert "llm: openai fake" in status.output and "llm: auto" not in status.output, status.output
    sent = server.total
    again = CliRunner().invoke(app, ["scan", str(out_dir), "--kind", "response", "--question", "Budget, again?", "-q"])
    assert again.exit_code == 0, again.output
    assert server.total == 2 * sent and "prevalence 50.0% (2 of 4 pieces answered)" in again.output

def test_a_run_dir_made_by_scan_finds_its_relative_price_file_from_elsewhere(
        tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """scan FILES --run-dir DIR --prices prices.json kept the path as typed in DIR's config
    (run keeps it absolute): the next command on DIR from another folder stopped with
    'price file prices.json does not exist'."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "prices.json").write_text(json.dumps({"fake": {"input": 0.5, "output": 1.5}}))
    chats = work / "chats.jsonl"
    chats.write_text("".join(json.dumps({"id": f"c{i}", "model": "m", "messages": [
        {"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
        for i in range(4)))
    out_dir = tmp_path / "scanned"
    monkeypatch.chdir(work)
    code, out = scan(server, "chats.jsonl", "--run-dir", str(out_dir), "--kind", "response", "--question", "Budget?",
                     "--prices", "prices.json")
    assert code == 0, out
    monkeypatch.chdir(elsewhere)
    again = CliRunner().invoke(app, ["scan", str(out_dir), "--kind", "response", "--question", "Budget, again?", "-q"])
    assert again.exit_code == 0, f"{again.output}\n{again.exception!r}"
    assert "does not exist" not in again.output


def test_the_cost_cap_holds_calls_back_and_exits_3(run: Path, server: FakeOpenAIServer) -> None:
    result = CliRunner().invoke(app, ["scan", str(run), "--question", "Budget?", "--kind", "thought",
                                      "--max-cost", "0.0005", "--llm", "openai", "--base-url", server.base_url,
                                      "--model", "gpt-4o-mini", "--concurrency", "1", "-q"])
    assert result.exit_code == 3, result.output
    assert "not sent at the --max-cost cap" in result.output
    rows = pq.read_table(run / "scan_budget.parquet").to_pylist()
    held = sum(r["status"] == "not sent: cost cap" for r in rows)
    # the cap stops the answers part-way (the yeses' quotes are held back too): far fewer calls
    # than pieces were sent, and no piece without its full reply counts as answered
    assert held > 0 and 0 < server.total < len(rows) // 10
    assert all(r["answer"] is None for r in rows if r["status"] != "ok")


def test_json_rows_are_keyed_like_the_parquet(run: Path, server: FakeOpenAIServer) -> None:
    code, out = scan(server, str(run), "--question", "Budget?", "--kind", "thought", "--by", "model", "--json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {r["group"]: r["positives"] for r in rows} == {"a": 60, "b": 10}
    assert {"n", "rate", "ci_low", "ci_high", "q_value"} <= set(rows[0])


def test_a_response_is_judged_with_the_request_before_it_and_quotes_only_count_from_it(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    """scan.v2 shows a response's user turn as context (a question about "the request" needs
    it), never a user piece's, and the default scan.v1 the piece alone; a quote the piece does
    not hold does not verify, and with --require-quote such a yes counts as no."""
    from featdisco.evidence.scan import AnswerSpec, build_requests, select_pieces
    from featdisco.prompts import load_prompt
    from featdisco.rundir import RunDir

    pieces = [PlantedPiece("t0", 0, "user", [], text=f"Please mind the {PLANTED} when you answer."),
              PlantedPiece("t0", 1, "response", [], text=f"Sure: my {PLANTED} is fine."),
              PlantedPiece("t1", 0, "user", [], text="What is two plus two?"),
              PlantedPiece("t1", 1, "response", [], text=f"Four, within my {PLANTED}, as I invent things.")]
    run = write_run(tmp_path / "r", pieces, [("response", "unused")])
    df = select_pieces(RunDir(run), None, None, 0, None)
    reqs = build_requests(df, "Q?", AnswerSpec(), load_prompt("scan", version=2))
    users = {pid: r.messages[-1].content for pid, r in zip(df["piece_id"], reqs, strict=True)}
    assert "<request>\nWhat is two plus two?\n</request>" in users["t1:1:response"]
    assert "<request>" not in users["t1:0:user"]
    plain = build_requests(df, "Q?", AnswerSpec(), load_prompt("scan", version=1))
    assert not any("What is two plus two" in r.messages[-1].content for r in plain[1:2] + plain[3:])
    code, out = scan(server, str(run), "--question", "Budget?", "--kind", "response", "--name", "q",
                     "--require-quote")
    assert code == 0, out
    rows = {r["piece_id"]: r for r in pq.read_table(run / "scan_q.parquet").to_pylist()}
    assert rows["t0:1:response"]["answer"] is True and rows["t0:1:response"]["verified"] is True
    # the fake invents its quote for this one: a yes without a verified quote counts as no
    assert rows["t1:1:response"]["answer"] is False and rows["t1:1:response"]["verified"] is False
    assert rows["t1:1:response"]["reason"].startswith("no verified quote for a yes")
