"""``featdisco ask`` on a planted run with a scripted planner and answerer on the fake
OpenAI server: the plan's scan measures the planted rates, the answer's numbers are those of
the steps, its quotes verify, and an invented quote is dropped and counted."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply

N = 100  # responses per model
RATES = {"a": 0.40, "b": 0.10}  # the planted share of responses that apologise
SORRY = "I am sorry"
QUESTION = "Which model apologises more?"
INVENTED = "I deeply regret every word I have ever written"
_PIECE = re.compile(r"<piece>\n(.*)\n</piece>", re.DOTALL)


def planted_pieces() -> list[PlantedPiece]:
    pieces = []
    for model, rate in RATES.items():
        for i in range(N):
            sorry = i < round(N * rate)
            text = (f"Response {i} of {model}. {SORRY}, but I cannot  help with that request." if sorry
                    else f"Response {i} of {model}. Here is the answer you asked for.")
            pieces.append(PlantedPiece(f"{model}{i}", 1, "response", [0 if sorry else 1], model=model, text=text))
            pieces.append(PlantedPiece(f"{model}{i}", 0, "user", [2], model=model,
                                       text=f"User {i} says {SORRY.lower()} for asking."))
    return pieces


def schema_name(req: FakeRequest) -> str:
    return str(req.body.get("response_format", {}).get("json_schema", {}).get("name", ""))


def user_text(req: FakeRequest) -> str:
    return next(str(m["content"]) for m in req.body["messages"] if m["role"] == "user")


PLAN = {"steps": [
    {"tool": "scan", "purpose": "Measure apologies per model.", "query": "Does the response apologise?",
     "by": "model", "kind": "response", "level": "", "sample": 0, "top": 0},
    {"tool": "compare", "purpose": "Which clusters differ by model.", "query": "", "by": "model", "kind": "",
     "level": "", "sample": 0, "top": 3}]}


def answer_from(results: str, invent: bool) -> dict[str, object]:
    """What an honest answerer writes: the per-model rates and counts of the scan step, as
    printed, and the first evidence quote of each model."""
    rows = dict(re.findall(r"^(a|b)\t(\d+\t\d+\t[\d.]+%)", results, re.MULTILINE))
    n_a, pos_a, rate_a = rows["a"].split("\t")
    n_b, pos_b, rate_b = rows["b"].split("\t")
    text = (f"Model a apologises more: {rate_a} of its responses ({pos_a} of {n_a}) against {rate_b} "
            f"({pos_b} of {n_b}) for model b.")
    cites = []
    for model in ("a", "b"):
        m = re.search(rf"^\[([^\]]+)\] {model}: \"(.*)\"$", results, re.MULTILINE)
        assert m, results
        cites.append({"piece_id": m.group(1), "quote": m.group(2)})
    if invent:
        text += " The gap is 123.4 points."
        cites.append({"piece_id": cites[0]["piece_id"], "quote": INVENTED})
        cites.append({"piece_id": "no-such-piece", "quote": SORRY})
    return {"answer": text, "citations": cites}


def handler(invent: bool = False, plans: list[dict[str, object]] | None = None,
            answer: dict[str, object] | None = None) -> Callable[[FakeRequest], Reply]:
    plans = list(plans or [PLAN])

    def handle(req: FakeRequest) -> Reply:
        name = schema_name(req)
        if name == "ask_plan":
            return Reply(content=json.dumps(plans.pop(0) if len(plans) > 1 else plans[0]))
        if name == "ask_answer":
            results = user_text(req).split("Step outputs:\n", 1)[1]
            return Reply(content=json.dumps(answer or answer_from(results, invent)))
        if name == "scan_question":  # the scan's question rewritten for the judge: kept as written
            return Reply(content=json.dumps({"question": user_text(req).split("Question: ", 1)[1].split("\n")[0]}))
        if name in ("scan_answer", "scan_decision"):  # the scan decides first, then quotes the yeses
            piece = _PIECE.search(user_text(req))
            assert piece
            yes = SORRY in piece.group(1) and piece.group(1).startswith("Response")
            if name == "scan_decision":
                return Reply(content=json.dumps({"answer": yes}))
            return Reply(content=json.dumps({"answer": yes, "quote": "i am  SORRY" if yes else "",
                                             "reason": "Scripted."}))
        return Reply(status=400, raw_body=b'{"error": {"message": "unexpected request", "type": "bad"}}')

    return handle


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", planted_pieces(),
                     [("response", "Apologises to the user"), ("response", "Answers directly"),
                      ("user", "Polite user request")])


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(handler()) as srv:
        yield srv


def ask(srv: FakeOpenAIServer, run: Path, *args: str) -> tuple[int, str]:
    if not args or args[0].startswith("-"):
        args = (QUESTION, *args)
    result = CliRunner().invoke(app, ["ask", str(run), args[0], "--llm", "openai", "--base-url", srv.base_url,
                                      "--model", "fake", "--max-sample", "500", "-q", *args[1:]])  # the last wins
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def texts(run: Path) -> dict[str, str]:
    t = pq.read_table(run / "pieces.parquet", columns=["piece_id", "text"]).to_pydict()
    return dict(zip(t["piece_id"], t["text"], strict=True))


def test_ask_plans_a_scan_and_answers_with_its_numbers_and_verified_quotes(run: Path,
                                                                           server: FakeOpenAIServer) -> None:
    code, out = ask(server, run)
    assert code == 0, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert [s["tool"] for s in doc["plan"]] == ["scan", "compare"]
    scan = doc["steps"][0]
    assert scan["sample"] == 500 and scan["error"] is None  # the cap, as no sample was asked
    rates = {r["group"]: (r["positives"], r["n"], r["rate"]) for r in scan["table"]}
    assert rates["a"] == (40, 100, pytest.approx(0.40)) and rates["b"] == (10, 100, pytest.approx(0.10))
    compare = doc["steps"][1]["table"][0]  # the compare step ran compare on the run's clusters
    assert compare["label"] == "Apologises to the user" and compare["group_high"] == "a"
    assert compare["rate_high"] == pytest.approx(0.40)
    # the answer's numbers are the scan's, and every one of them is matched
    assert "40.0%" in doc["answer"] and "10.0%" in doc["answer"] and "(40 of 100)" in doc["answer"]
    assert sorted(doc["numbers_matched"]) == sorted(["40.0%", "40", "100", "10.0%", "10", "100"])
    assert doc["numbers_unmatched"] == []
    # both quotes verify against the cited piece, one per model
    pieces = texts(run)
    assert len(doc["citations"]) == 2 and doc["dropped_citations"] == []
    for c in doc["citations"]:
        assert pieces[c["piece_id"]][c["start"]:c["end"]].lower() == SORRY.lower()
    assert {c["piece_id"][0] for c in doc["citations"]} == {"a", "b"}
    assert "citations: 2 verified, 0 dropped" in out and "numbers: 6 match" in out
    assert doc["unsupported"] == "" and "unsupported" not in out
    # stored as an analysis the report shows, with the manifest entry
    rows = pq.read_table(run / "analysis_ask_which_model_apologises_more.parquet")
    meta = {k.decode(): v.decode() for k, v in (rows.schema.metadata or {}).items()}
    assert meta["question"] == QUESTION and meta["answer"] == doc["answer"]
    assert [r["part"] for r in rows.to_pylist()] == ["step", "step", "answer", "citation", "citation"]
    assert (run / "analysis_ask_which_model_apologises_more_step1.parquet").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["asks"]["which_model_apologises_more"]["citations"] == 2
    # a rerun is answered from the cache: nothing is sent again
    sent = server.total
    assert ask(server, run)[0] == 0 and server.total == sent


def test_an_invented_quote_is_dropped_and_counted_and_a_made_up_number_flagged(
        run: Path, server: FakeOpenAIServer) -> None:
    server.set_handler(handler(invent=True))
    code, out = ask(server, run)
    assert code == 0, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert len(doc["citations"]) == 2
    assert {(d["quote"], d["why"]) for d in doc["dropped_citations"]} == {
        (INVENTED, "quote not found in the piece"), (SORRY, "no piece with this id")}
    assert INVENTED not in json.dumps(doc["citations"])
    assert doc["numbers_unmatched"] == ["123.4"]
    assert "citations: 2 verified, 2 dropped" in out and "1 do not (123.4)" in out
    rows = pq.read_table(run / "analysis_ask_which_model_apologises_more.parquet").to_pylist()
    cited = [r["text"] for r in rows if r["part"] == "citation"]
    assert len(cited) == 2 and INVENTED not in cited  # never shown as evidence


def test_an_answer_that_nothing_from_the_steps_supports_is_flagged_not_shown_as_a_finding(
        run: Path, server: FakeOpenAIServer) -> None:
    """The local model planned one step, then answered "None of the models apologise" with no
    number and no quote: a claim about the data that no step's output backs."""
    only_compare = {"steps": [PLAN["steps"][1]]}
    server.set_handler(handler(plans=[only_compare], answer={"answer": "None of the models apologise.",
                                                             "citations": []}))
    code, out = ask(server, run)
    assert code == 0, out
    assert ("warning: unsupported answer: the answer cites no number from the steps' outputs and no "
            "verified quote; do not take it as a finding") in out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert doc["unsupported"].startswith("the answer cites no number")
    assert "every step came back empty" not in doc["unsupported"]  # the compare step had rows
    rows = pq.read_table(run / "analysis_ask_which_model_apologises_more.parquet")
    meta = {k.decode(): v.decode() for k, v in (rows.schema.metadata or {}).items()}
    assert meta["unsupported"] == doc["unsupported"]  # what the report's ask page shows
    assert json.loads((run / "manifest.json").read_text())["asks"]["which_model_apologises_more"]["unsupported"]


def test_a_bad_plan_is_re_asked_once_then_run(run: Path, server: FakeOpenAIServer) -> None:
    bad = {"steps": [{**PLAN["steps"][0], "by": "vendor"}]}  # type: ignore[dict-item]
    server.set_handler(handler(plans=[bad, PLAN]))
    code, out = ask(server, run)
    assert code == 0, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert doc["plan_problems"] == ["step 1 (scan): by 'vendor' is not a grouping column; use one of model"]
    assert [s["by"] for s in doc["plan"]] == ["model", "model"]


def test_a_find_or_cooccur_step_grouped_by_a_column_is_re_asked_as_a_measurement(
        run: Path, server: FakeOpenAIServer) -> None:
    """The local model planned `find` with by=model for "which model apologises more?": find
    ranks clusters and gives no rate per model, so the answer came from nothing."""
    bad = {"steps": [{**PLAN["steps"][1], "tool": "cooccur", "by": "model"}]}  # type: ignore[dict-item]
    server.set_handler(handler(plans=[bad, PLAN]))
    code, out = ask(server, run)
    assert code == 0, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert doc["plan_problems"] == ["step 1 (cooccur): cooccur does not group, so by 'model' would be ignored; "
                                    "to measure a behaviour per model, scan it (or compare) with by 'model', "
                                    "or leave by empty"]
    assert [s["tool"] for s in doc["plan"]] == ["scan", "compare"]  # the re-asked plan measures


def test_a_plan_bad_twice_exits_3_and_an_empty_question_2(run: Path, server: FakeOpenAIServer) -> None:
    bad = {"steps": [{**PLAN["steps"][0], "tool": "find"}]}  # type: ignore[dict-item]
    server.set_handler(handler(plans=[bad]))
    code, out = ask(server, run)
    assert code == 3, out
    assert "no embeddings to find clusters with" in out and "still unusable after one re-ask" in out
    assert not any(k for k in server.hits if "Step outputs" in k)  # no steps, no answer asked
    sent = server.total
    # "Rerun to continue" was wrong advice: a rerun replays the same two plans from the cache
    again_code, again = ask(server, run)
    assert again_code == 3 and server.total == sent and "Rerun to continue" not in again
    assert "Rerunning the same question replays the same (cached) plans: ask it in other words" in again
    for args, msg in ((["  "], "the question is empty"), ([QUESTION, "--name", "a b"], "--name 'a b'")):
        with pytest.raises(FeatdiscoError, match=msg):  # main() prints it on one line and exits 2
            ask(server, run, *args)
    assert server.total == sent


def test_the_cost_cap_holds_over_plan_steps_and_answer_and_exits_3(run: Path, server: FakeOpenAIServer) -> None:
    cap = 0.004
    code, out = ask(server, run, "--model", "gpt-4o-mini", "--max-cost", str(cap), "--concurrency", "1")
    assert code == 3, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    held = doc["steps"][0]["llm"]["skipped_budget"]
    assert held > 0 and any("not sent at the cost cap" in r for r in doc["incomplete"])
    spent = doc["llm"]["cost_usd"] + sum(s["llm"].get("cost_usd") or 0.0 for s in doc["steps"])
    assert 0 < spent <= cap


def test_private_clusters_are_neither_shown_to_the_llm_nor_in_the_tables(run: Path, server: FakeOpenAIServer) -> None:
    import pyarrow as pa

    clusters = pq.read_table(run / "clusters.parquet")
    pq.write_table(clusters.append_column("private", pa.array([False, False, True])), run / "clusters.parquet")
    assert ask(server, run)[0] == 0
    plan_prompt = next(k for k in server.hits if k.startswith("Question: "))
    assert "Apologises to the user" in plan_prompt and "Polite user request" not in plan_prompt
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert [r["cluster_id"] for r in doc["steps"][1]["table"]] == [0, 1]
    assert ask(server, run, "--show-private")[0] == 0
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert [r["cluster_id"] for r in doc["steps"][1]["table"]] == [0, 1, 2]


def test_numbers_match_at_the_answers_precision_and_names_are_not_numbers() -> None:
    from featdisco.evidence.ask import check_numbers

    steps = "group\tn\trate\na\t100\t40.0%\nlog2_ratio\t-2.25\tp 1.24e-06"
    matched, unmatched = check_numbers(
        "gpt-4o: 40% (0.4) of 100 in step 2 [a4:1:response], log2 -2.25, p 1.24e-06; 41% and 7 are made up.", steps)
    assert matched == ["40%", "0.4", "100", "-2.25", "1.24e-06"] and unmatched == ["41%", "7"]


def test_the_ask_is_recorded_with_its_provenance_and_the_command_that_refreshes_it(
        run: Path, server: FakeOpenAIServer) -> None:
    from featdisco.analysis.provenance import analyses_status

    assert ask(server, run)[0] == 0
    entry = next(a for a in analyses_status(run) if a["name"] == "ask_which_model_apologises_more")
    assert entry["current"] and "analysis_ask_which_model_apologises_more.parquet" in entry["files"]
    assert entry["command"].startswith(f"featdisco ask {run} 'Which model apologises more?'")
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert doc["provenance"]["model"] == "fake" and doc["provenance"]["prompts"]["ask_plan"].startswith("ask_plan.v2")
    assert doc["provenance"]["prompts"]["scan"].startswith("scan.v1")  # what its scans used, not the newest file


def test_the_local_model_accepts_the_grammar_of_every_ask_reply() -> None:
    """llama.cpp rejects a grammar whose repetitions are too many (an answer bounded at 3,000
    characters was: the offline default then failed every answer as bad-schema)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from featdisco.llm.local.backend import schema_to_grammar
    from featdisco.llm.local.install import model_path
    from featdisco.llm.replies import AskAnswer, AskPlan

    if not model_path().exists():
        pytest.skip(f"no local model at {model_path()} (featdisco models install)")
    llm = llama_cpp.Llama(str(model_path()), vocab_only=True, verbose=False)
    for reply in (AskPlan, AskAnswer):
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab,
                                                       schema_to_grammar(reply.json_schema()).encode(), b"root")
        assert sampler, f"llama.cpp rejected the grammar of {reply.__name__}"
        llama_cpp.llama_sampler_free(sampler)


def test_evidence_and_citations_are_shown_in_the_pieces_own_words(run: Path, server: FakeOpenAIServer) -> None:
    """The quote check forgives case and spacing ("i am  SORRY" finds "I am sorry"); what is shown
    as a verified quote must still be the piece's words, not the LLM's copy of them."""
    base = handler()

    def shouting(req: FakeRequest) -> Reply:
        reply = base(req)
        if schema_name(req) == "ask_answer":  # the answerer re-cases and re-spaces what it cites
            doc = json.loads(reply.content or "")
            for c in doc["citations"]:
                c["quote"] = "  ".join(c["quote"].upper().split())
            reply = Reply(content=json.dumps(doc))
        return reply

    server.set_handler(shouting)
    code, out = ask(server, run)
    assert code == 0, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    pieces = texts(run)
    assert len(doc["citations"]) == 2
    for c in doc["citations"]:
        assert c["quote"] == pieces[c["piece_id"]][c["start"]:c["end"]] == SORRY
    assert [e["quote"] for e in doc["steps"][0]["evidence"]] == [SORRY] * len(doc["steps"][0]["evidence"])
    assert "I  AM" not in out and "i am  SORRY" not in out and SORRY in out


def test_a_plan_grouping_by_a_column_with_too_many_values_is_told_why(tmp_path: Path,
                                                                      server: FakeOpenAIServer) -> None:
    """With 13 models, ``model`` is no grouping column for ask (at most 12 groups); the plan's
    problem, printed when the re-ask fails too, says so instead of "not a grouping column"."""
    pieces = [PlantedPiece(f"t{i}", 1, "response", [0], model=f"model-{i}", text=f"Response {i}.")
              for i in range(13)]
    wide = write_run(tmp_path / "wide", pieces, [("response", "Answers directly")])
    server.set_handler(handler(plans=[PLAN]))
    code, out = ask(server, wide)
    assert code == 3, out
    assert "by 'model' has 13 values, more than ask groups by (12); `featdisco scan --by model` takes it" in out
    assert "is not a grouping column" not in out


def test_a_second_question_alike_in_its_first_words_keeps_the_first_ask(run: Path, server: FakeOpenAIServer) -> None:
    """Both questions are named "which_model_apologises_more_often_when_t" by their first 40
    characters; the second used to replace the first's answer, files and manifest entry."""
    first = "Which model apologises more often when the user is rude?"
    second = "Which model apologises more often when the user is polite?"
    code, out = ask(server, run, first)
    assert code == 0, out
    kept = (run / "ask_which_model_apologises_more_often_when_t.json").read_text()
    code, out = ask(server, run, second)
    assert code == 0, out
    assert (run / "ask_which_model_apologises_more_often_when_t.json").read_text() == kept
    asks = json.loads((run / "manifest.json").read_text())["asks"]
    assert {v["question"] for v in asks.values()} == {first, second}


def test_a_plan_scanning_a_kind_the_run_lacks_is_re_asked(run: Path, server: FakeOpenAIServer) -> None:
    """The run has user and response pieces only. A scan of thoughts used to run, fail ("has no
    pieces of kind thought"), and the answer was written from nothing with exit status 0."""
    thoughts = {"steps": [{**PLAN["steps"][0], "kind": "thought"}]}  # type: ignore[dict-item]
    server.set_handler(handler(plans=[thoughts, PLAN]))
    code, out = ask(server, run)
    assert code == 0, out
    doc = json.loads((run / "ask_which_model_apologises_more.json").read_text())
    assert doc["plan_problems"] == ["step 1 (scan): kind 'thought': this run has no thought pieces; "
                                    "use one of user, response or leave it empty"]
    assert [s["kind"] for s in doc["plan"]] == ["response", ""] and doc["steps"][0]["error"] is None
