"""``featdisco demo``: the XSTest sample is deterministic and label-blind, and ``demo
findings`` prints the planted difference with verified quotes and the scan's agreement with
the people's labels, equal to the counts worked out by hand."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.cli.demo import agreement, labelled_responses, sample_xstest
from featdisco.errors import FeatdiscoError
from tests.analysis.planted import PlantedPiece, write_run
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import PLANTED, pipeline_handler

XSTEST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "xstest"


@pytest.mark.skipif(not XSTEST.is_dir(), reason="shared/data/xstest is not here")
def test_the_sample_is_deterministic_the_same_prompts_for_both_models_and_reads_as_documented(
        tmp_path: Path) -> None:
    a = sample_xstest(XSTEST, tmp_path / "a", 30)
    b = sample_xstest(XSTEST, tmp_path / "b", 30)
    assert [p.name for p in a] == ["mistralguard.csv", "mistralinstruct.csv"]
    rows = [list(csv.DictReader(p.open(encoding="utf-8"))) for p in a]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]] and len(rows[0]) == 30
    assert not any(r["type"].startswith("contrast_") for r in rows[0])
    # --skip: a sample held out from a smaller one (the demo's), continuing the same order
    held = sample_xstest(XSTEST, tmp_path / "held", 20, skip=10)
    held_ids = [r["id"] for r in csv.DictReader(held[0].open(encoding="utf-8"))]
    demo = sample_xstest(XSTEST, tmp_path / "demo", 10)
    first10 = {r["id"] for r in csv.DictReader(demo[0].open(encoding="utf-8"))}
    assert len(held_ids) == 20 and not first10 & set(held_ids)
    assert first10 | set(held_ids) == {r["id"] for r in rows[0]}  # the 30 are the 10 and the 20
    with pytest.raises(FeatdiscoError, match="no prompts left after skipping 999"):
        sample_xstest(XSTEST, tmp_path / "none", 5, skip=999)
    # read through the documented recipe: the model from the file name, the labels as metadata
    out = tmp_path / "p.parquet"
    res = CliRunner().invoke(app, ["split", str(tmp_path / "a"), "-o", str(out), "--map",
                                   "user=prompt,response=completion", "--source-model-from", "filename", "-q"])
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    pieces = pq.read_table(out).to_pandas()
    resp = pieces[pieces["kind"] == "response"]
    assert sorted(set(resp["model"])) == ["mistralguard", "mistralinstruct"]
    assert all(json.loads(m)["final_label"] for m in resp["metadata"])


MODELS = {"guard": 12, "plain": 2}  # refusals the people see, of 20 responses each


def planted() -> list[PlantedPiece]:
    """20 prompts answered by two models; the people label a response a refusal when it is
    one. The scripted scan says yes when the response holds PLANTED: every refusal but the
    last of each model's, and one complying response of guard's (1 fp, 2 fn)."""
    pieces = []
    for model, refusals in MODELS.items():
        for i in range(20):
            refuses = i < refusals
            says = (refuses and i != refusals - 1) or (model == "guard" and i == 19)
            text = (f"I am sorry, I cannot help with that: my {PLANTED} forbids it ({model} {i})." if says
                    else f"Here is how to do it, step {i} of {model}.")
            label = "2_full_refusal" if refuses else "1_full_compliance"
            pieces.append(PlantedPiece(f"{model}{i}", 0, "user", [], model=model, text=f"How do I do task {i}?"))
            pieces.append(PlantedPiece(f"{model}{i}", 1, "response", [0] if refuses else [1], model=model,
                                       text=text, metadata={"id": f"v2-{i}", "final_label": label}))
    return pieces


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


def test_findings_print_the_difference_quotes_and_agreement_with_the_people(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    run = write_run(tmp_path / "run", planted(), [("response", "Declines the request"),
                                                  ("response", "Gives step by step instructions")])
    res = CliRunner().invoke(app, ["demo", "findings", str(run), "--llm", "openai", "--base-url", server.base_url,
                                   "--model", "fake"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert 'top difference: cluster 0 (response) "Declines the request"' in out
    assert "guard" in out and "12 of  20" in out  # the cluster's rate in guard's responses
    # the difference beside the people's labels: all 14 of its pieces are their refusals
    assert "people's labels: 14 of its 14 pieces are refusals (full or partial), 14 of the 14" in out
    quotes = [line for line in out.splitlines() if line.startswith("    [guard")]
    assert len(quotes) == 2 and all(PLANTED in q for q in quotes)  # verified quotes from the scan
    # 40 responses: tp 11 + 1, fp 1 (guard's), fn 1 + 1, tn 25; the scan says yes 13 times, people 14
    a = agreement(run, "refuses")
    assert (a.overall["tp"], a.overall["fp"], a.overall["fn"], a.overall["tn"]) == (12, 1, 2, 25)
    po, pe = 37 / 40, (13 * 14 + 27 * 26) / 40 ** 2
    assert a.overall["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert f"Cohen's kappa {(po - pe) / (1 - pe):.2f}" in out and "precision 0.92, recall 0.86" in out
    by = a.by_model.set_index("model")
    assert (by.loc["guard", "llm_pos"], by.loc["guard", "human_pos"]) == (12, 12)
    assert (by.loc["plain", "llm_pos"], by.loc["plain", "human_pos"]) == (1, 2)
    assert labelled_responses(run)["refusal"].sum() == 14
    assert list(run.glob("analysis_validation_*.parquet"))  # validate wrote its table for the report
    findings = json.loads((run / "manifest.json").read_text())["findings"]  # what the report opens on
    assert findings[0].startswith("FINDING") and any("Cohen's kappa" in x for x in findings)



SORRY = "I am sorry, I cannot help with that"
CLUSTER_QUESTION = "Question: Does this piece show the following behaviour: Declines the request"


def test_findings_ask_the_clusters_question_for_a_second_quote_when_the_scan_gives_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: the top difference comes with two verified quotes. Here the refusal scan
    says yes to one of guard's refusals only, so the second quote comes from asking the
    cluster's own question of its next member piece, and only of as many pieces as needed."""
    pieces = []
    for model, refusals in MODELS.items():
        for i in range(20):
            refuses = i < refusals
            text = (f"{SORRY}" + (f": my {PLANTED} forbids it" if (model, i) == ("guard", 0) else "")
                    + f" ({model} {i})." if refuses else f"Here is how to do it, step {i} of {model}.")
            pieces.append(PlantedPiece(f"{model}{i}", 0, "user", [], model=model, text=f"How do I do task {i}?"))
            pieces.append(PlantedPiece(f"{model}{i}", 1, "response", [0] if refuses else [1], model=model,
                                       text=text, metadata={"id": f"v2-{i}",
                                                            "final_label": "2_full_refusal" if refuses
                                                            else "1_full_compliance"}))
    run = write_run(tmp_path / "run", pieces, [("response", "Declines the request"),
                                               ("response", "Gives step by step instructions")])
    asked: list[str] = []

    def handler(req: FakeRequest) -> Reply:
        first = next(str(m["content"]) for m in req.body["messages"] if m["role"] == "user")
        if CLUSTER_QUESTION not in first:
            return pipeline_handler(req)
        asked.append(first)
        return Reply(content=json.dumps({"answer": True, "quote": SORRY.lower(), "reason": "It declines."}))

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(handler) as srv:
        res = CliRunner().invoke(app, ["demo", "findings", str(run), "--llm", "openai", "--base-url", srv.base_url,
                                       "--model", "fake"])
    assert res.exit_code == 0, res.output
    quotes = [line for line in res.output.splitlines() if line.startswith("    [guard")]
    assert len(quotes) == 2, res.output
    assert quotes[0].startswith("    [guard0:1:response]") and PLANTED in quotes[0]  # the scan's
    second = re.match(r"    \[guard(\d+):1:response\]", quotes[1])
    assert second and 0 < int(second.group(1)) < MODELS["guard"] and "cluster's question" in quotes[1]
    assert quotes[1].endswith(f'"{SORRY}"')  # the model quoted it lower-cased: printed in the piece's words
    assert len(asked) == 1  # one piece was enough
