"""Evidence and labelling in a real browser (headless chromium, file://, no server): feature
chips highlight their quote, unverified quotes are marked and never highlighted, a scan page
shows its hits and per-group chart, and pieces marked right or wrong on scan and cluster
pages export a CSV that `featdisco validate` scores as marked (the round trip)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from featdisco.evidence.validate import validate
from featdisco.report import build_report
from tests.verify.runs import INVENTED, SCAN, build_evidence_run


@pytest.fixture(scope="module")
def evidence_report(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    run = build_evidence_run(tmp_path_factory.mktemp("evidence-report"), shared_data)
    build_report(run)
    return run


@pytest.fixture()
def page(browser: Any, evidence_report: Path) -> Iterator[Any]:
    report = evidence_report / "report"
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto((report / "index.html").as_uri())
    pg.wait_for_selector("h1:has-text('Run overview')")
    yield pg
    assert pg.evaluate("window.__xss") is None, "a planted payload ran"
    assert errors == []
    assert [u for u in requests if not u.startswith((report.as_uri(), "blob:"))] == []
    context.close()


def _shard(path: Path) -> Any:
    raw = path.read_bytes()
    return json.loads(b"[" + raw[len(b"FD.put("):-len(b");\n")] + b"]")[1]


def test_chips_highlight_their_quote(page: Any, evidence_report: Path) -> None:
    quotes = _shard(evidence_report / "report" / "data" / "q" / "0.js")
    t = next(int(t) for t, pieces in quotes.items()
             if any(r[4] is True for rows in pieces.values() for r in rows)
             and any(r[4] is False for rows in pieces.values() for r in rows))
    assert "quotes verified" in page.inner_text(".cards").lower()
    page.goto(page.url.split("#")[0] + f"#/t/{t}")
    page.wait_for_selector("button.chip.quoted")
    assert page.locator("mark").count() == 0
    chip = page.locator("button.chip.quoted").first
    quote = chip.get_attribute("title").split("”:")[0].lstrip("“")
    chip.click()
    assert page.locator("mark.quote").count() == 1
    assert page.inner_text("mark.quote").strip() == quote.strip()
    chip.click()  # again: off
    assert page.locator("mark.quote").count() == 0
    bad = page.locator(".chip.unverified").first
    assert "unverified quote" in bad.inner_text().lower()
    assert INVENTED in bad.get_attribute("title")
    bad.click()
    assert page.locator("mark").count() == 0  # never highlighted as evidence


def test_scan_page_hits_chart_and_unverified(page: Any) -> None:
    page.click("#nav >> text=Scans")
    page.wait_for_selector(f"main a:text-is('{SCAN}')")
    page.click(f"main a:text-is('{SCAN}')")
    page.wait_for_selector("h1:has-text('Scan: budget')")
    assert page.locator("svg.plot line.whisker").count() > 0  # per-model prevalence with intervals
    assert "thinker" in page.locator("svg.plot").text_content()
    hits = page.locator(".scanhit.hit")
    assert hits.count() == 11
    for i in range(hits.count()):
        h = hits.nth(i)
        if h.locator(".unverified").count():
            assert h.locator("mark").count() == 0 and INVENTED in h.inner_text()
        else:
            assert h.locator("mark.quote").count() == 1
            assert h.locator("mark.quote").text_content() == h.locator(".answer q").text_content()
    assert page.locator(".scanhit.hit .unverified").count() == 2
    assert page.locator(".scanhit.nohit").count() == 20


def test_label_export_validate_round_trip(page: Any, evidence_report: Path, tmp_path: Path) -> None:
    base = page.url.split("#")[0]
    page.goto(base + f"#/scan/{SCAN}")
    page.wait_for_selector(".scanhit.hit")
    assert not page.locator(".scanhit button.lab.right").first.is_visible()  # labelling mode is off
    page.check(".labmode")
    hits, others = page.locator(".scanhit.hit"), page.locator(".scanhit.nohit")
    for i in (0, 1, 2):
        hits.nth(i).locator("button.lab.right").click()
    hits.nth(3).locator("button.lab.wrong").click()
    for i in (0, 1):
        others.nth(i).locator("button.lab.right").click()
    others.nth(2).locator("button.lab.wrong").click()
    others.nth(3).locator("button.lab.wrong").click()
    others.nth(3).locator("button.lab.wrong").click()  # a second click takes the mark back
    assert "7 marked here · 7 in this run" in page.inner_text(".labcount")
    page.goto(base + "#/c/6")
    page.wait_for_selector(".piece.member")
    members = page.locator(".piece.member")
    assert members.count() >= 3
    assert members.first.locator("button.lab.right").is_visible()  # the mode is remembered
    members.nth(0).locator("button.lab.right").click()
    members.nth(1).locator("button.lab.right").click()
    members.nth(2).locator("button.lab.wrong").click()
    page.reload()
    page.wait_for_selector(".piece.member")
    assert page.locator(".piece.member button.lab.on").count() == 3  # kept in the browser
    assert "3 marked here · 10 in this run" in page.inner_text(".labcount")
    with page.expect_download() as dl:
        page.click("button.export")
    csv = tmp_path / "labels.csv"
    dl.value.save_as(csv)
    lines = csv.read_text().splitlines()
    assert lines[0] == "piece_id,target,label" and len(lines) == 11
    df = validate(evidence_report, csv).set_index("target")
    scan = df.loc[f"scan:{SCAN}"]
    # hits right -> tp, hit wrong -> fp, non-hits right -> tn, non-hit wrong -> fn
    assert (scan["tp"], scan["fp"], scan["fn"], scan["tn"]) == (3, 1, 1, 2)
    kind = next(k for k in ("user", "thought", "response") if f"cluster:{k}:6" in df.index)
    cluster = df.loc[f"cluster:{kind}:6"]
    assert (cluster["tp"], cluster["fp"], cluster["fn"], cluster["tn"]) == (2, 1, 0, 0)
    assert cluster["precision"] == pytest.approx(2 / 3)
    # the report shows the validation as intervals per target
    build_report(evidence_report)
    page.goto(base + "#/a/validation_labels")  # one validation per label file (labels.csv)
    page.reload()
    page.wait_for_selector("h2:has-text('Agreement with your labels')")
    assert page.locator("svg.plot line.whisker").count() >= 6
