"""The report in a real browser (headless Debian chromium via Playwright), opened from
file:// with no server: navigation, search, privacy toggle, plots, and hostile text that
must never run. Screenshots of every view are saved (see the ``shots`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture()
def page(browser: Any, report_dir: Path) -> Iterator[Any]:
    """A fresh page (fresh localStorage) that records errors and dialogs; each test ends by
    checking that no planted payload ran."""
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.requests = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.goto((report_dir / "index.html").as_uri())
    pg.wait_for_selector("h1:has-text('Run overview')")
    yield pg
    assert pg.evaluate("window.__xss") is None, "a planted payload ran"
    assert pg.dialogs == []
    assert pg.errors == []
    # only the report's own files were requested: no image at src=x, no network
    base = report_dir.as_uri()
    assert [u for u in pg.requests if not u.startswith(base)] == []
    context.close()


def shot(pg: Any, shots: Path, name: str) -> None:
    pg.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert (shots / f"{name}.png").stat().st_size > 5000


def test_cluster_list_to_cluster_to_transcript(page: Any, shots: Path) -> None:
    shot(page, shots, "overview")
    assert "unknown" in page.inner_text(".cards")  # fake model: cost unknown, said so
    page.click("#nav >> text=Clusters")
    page.wait_for_selector("table.clusters tbody tr")
    rows = page.locator("table.clusters tbody tr")
    assert rows.count() == 3
    # ranked by interest: the scripted rater gives "sadness" 90
    assert "sadness" in rows.nth(0).inner_text()
    shot(page, shots, "clusters")
    page.click("text=frequency (features)")
    page.wait_for_selector("strong:has-text('frequency (features)')")
    sizes = [int(page.locator("table.clusters tbody tr").nth(i).locator("td").nth(2).inner_text().replace(",", ""))
             for i in range(3)]
    assert sizes == sorted(sizes, reverse=True)
    page.locator("table.clusters a.clink").first.click()
    page.wait_for_selector("h2:has-text('Example pieces')")
    assert page.locator(".piece").count() > 0
    assert page.locator("h2:has-text('Member features') + table tbody tr").count() > 0
    shot(page, shots, "cluster")
    page.locator("text=open the whole transcript").first.click()
    page.wait_for_selector("h1:has-text('Transcript')")
    kinds = page.locator(".turn .piecehead .kind").all_inner_texts()
    assert {k.lower() for k in kinds} >= {"user", "response"}
    assert page.locator(".turn .chip").count() > 0
    shot(page, shots, "transcript")


def test_thought_transcript_sets_pieces_apart(page: Any, shots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#/transcripts")
    page.wait_for_selector("h1:has-text('Transcripts')")
    shot(page, shots, "transcripts")
    page.click("a:text-is('r1')")
    page.wait_for_selector(".turn.kind-thought")
    assert page.locator(".turn.kind-user").count() == 1
    assert page.locator(".turn.kind-response").count() == 1
    # the payload is shown as text, not parsed into elements
    assert "<script>" in page.inner_text(".turn.kind-thought .text")
    assert page.locator("main img, main script, main iframe").count() == 0
    shot(page, shots, "transcript-thought")


def test_search_for_a_feature(page: Any, shots: Path) -> None:
    page.fill("#q", "melancholy tone")
    page.press("#q", "Enter")
    page.wait_for_selector("h1:has-text('Search')")
    features = page.locator("h2:has-text('Features') + table tbody tr")
    assert features.count() >= 1
    assert "Melancholy tone" in features.first.inner_text()
    shot(page, shots, "search")
    page.fill("#q", "hawaii")
    page.press("#q", "Enter")
    # The previous results stay on the page until the new ones render: wait for the rows.
    rows = "h2:has-text('Transcripts whose text') + table tbody tr"
    page.wait_for_selector(f"{rows} >> nth=1")  # two models answered
    assert "awaii" in page.locator(rows).first.inner_text()
    page.fill("#q", "cooking cluster")
    page.press("#q", "Enter")
    labels = "h2:has-text('Clusters whose label') + table tbody tr"
    page.wait_for_selector(f"{labels} >> nth=1")
    assert all("cooking" in t for t in page.locator(labels).all_inner_texts())


def test_private_cluster_hidden_until_asked(page: Any, shots: Path) -> None:
    page.goto(page.url.split("#")[0] + "#/clusters/thought")
    page.wait_for_selector("table.clusters tbody tr")
    assert page.locator("table.clusters tbody tr").count() == 2
    assert page.locator("text=1 private cluster hidden").count() == 1
    assert page.locator("text=Cluster about sadness").count() == 0
    page.check("#private")
    page.wait_for_selector("table.clusters tbody tr >> nth=2")
    assert page.locator("table.clusters tbody tr").count() == 3
    assert page.locator(".badge:has-text('private')").count() == 1
    shot(page, shots, "clusters-private-shown")
    page.reload()  # the choice is remembered
    page.wait_for_selector("table.clusters tbody tr >> nth=2")
    page.uncheck("#private")
    page.wait_for_selector("text=1 private cluster hidden")


def test_private_cluster_page_and_features_hidden(page: Any, report_dir: Path) -> None:
    import orjson

    raw = (report_dir / "data" / "k" / "thought.js").read_bytes()
    rows = orjson.loads(raw[raw.index(b",") + 1:raw.rindex(b")")])
    private = next(r[0] for r in rows if r[6])
    page.goto(page.url.split("#")[0] + f"#/c/{private}")
    page.wait_for_selector("h1:has-text('Private cluster')")
    assert page.locator(".chip").count() == 0


def test_map_and_analyses(page: Any, shots: Path) -> None:
    page.click("#nav >> text=Map")
    page.wait_for_selector("canvas.map")
    painted = page.evaluate("""() => { const c = document.querySelector('canvas.map');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert painted > 100
    shot(page, shots, "map")
    page.click("#nav >> text=Analyses")
    page.wait_for_selector("text=compare_model")
    assert page.locator("main a:text-is('broken')").count() == 0
    assert page.locator("main a:text-is('compare_source')").count() == 1  # every comparison is kept
    page.click("main a:text-is('compare_model')")
    page.wait_for_selector("h2:has-text('Rate of each cluster per group')")
    assert page.locator("svg.plot line.whisker").count() > 0
    shot(page, shots, "analysis-compare")
    page.goto(page.url.split("#")[0] + "#/a/probes")
    page.wait_for_selector("h2:has-text('Probe F1 distribution')")
    assert page.locator("h2:has-text('Most predictable targets') + table tbody tr").count() >= 1
    shot(page, shots, "analysis-probes")
    page.goto(page.url.split("#")[0] + "#/a/hierarchy")
    page.wait_for_selector("ul.tree")
    assert "Parent <img" in page.inner_text("ul.tree")
    shot(page, shots, "analysis-hierarchy")


def test_every_view_runs_no_payload(page: Any) -> None:
    """Visit every view with private clusters shown (more hostile text on screen)."""
    page.check("#private")
    base = page.url.split("#")[0]
    for h in ("#/", "#/clusters/user", "#/clusters/thought", "#/clusters/response", "#/map", "#/transcripts",
              "#/search?q=script", "#/search?q=javascript", "#/search?q=onerror", "#/analyses", "#/a/compare_model", "#/a/compare_source",
              "#/a/probes", "#/a/hierarchy", "#/nowhere"):
        page.goto(base + h)
        page.wait_for_timeout(150)
        page.wait_for_selector("main h1")
    for i in range(9):
        page.goto(base + f"#/c/{i}")
        page.wait_for_selector("main h1")
    for t in range(21):
        page.goto(base + f"#/t/{t}")
        page.wait_for_selector("main h1")
    hrefs = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert all(h.startswith("#") for h in hrefs)
    assert page.locator("main img, main script").count() == 0


OVERFLOW_JS = """() => [...document.querySelectorAll('svg.plot')].flatMap((s) => {
    const vb = s.viewBox.baseVal;
    return [...s.querySelectorAll('text:not([transform])')].map((t) => t.getBBox())
        .filter((b) => b.x < vb.x - 0.5 || b.x + b.width > vb.x + vb.width + 0.5)
        .map((b) => [b.x, b.width, vb.width]); })"""


def test_analysis_plots_fit_and_say_what_is_missing(page: Any, shots: Path) -> None:
    """Issue 16 item 9: the compare chart writes 'no pieces of this kind' instead of a [0, 1]
    whisker for a group without such pieces and keeps every label inside the plot; the
    co-occurrence and label-quality results have plots."""
    base = page.url.split("#")[0]
    page.check("#private")
    page.goto(base + "#/a/compare_planted")
    page.wait_for_selector("h2:has-text('Rate of each cluster per group')")
    # the group "no-thoughts" has no pieces of any kind: written as such, no whisker over [0, 1]
    rows = page.locator("section table tbody tr").count()
    assert rows > 0 and page.locator("svg.plot text.nodata").count() == rows  # one per cluster drawn
    whiskers = page.evaluate("""() => [...document.querySelectorAll('svg.plot line.whisker')]
        .filter((l) => l.y1.baseVal.value === l.y2.baseVal.value)
        .map((l) => (l.x2.baseVal.value - l.x1.baseVal.value) / l.ownerSVGElement.viewBox.baseVal.width)""")
    assert whiskers and max(whiskers) < 0.9
    assert page.evaluate(OVERFLOW_JS) == []
    shot(page, shots, "analysis-compare-fixed")
    page.goto(base + "#/a/cooccurrence")
    page.wait_for_selector("h2:has-text('Strongest co-occurring pairs within transcripts')")
    assert page.locator("svg.plot rect").count() >= 1
    assert page.evaluate(OVERFLOW_JS) == []
    shot(page, shots, "analysis-cooccurrence")
    page.goto(base + "#/a/label_quality")
    page.wait_for_selector("h2:has-text('How well each label picks out')")
    assert page.locator("svg.plot circle.point").count() == 9
    assert page.locator("h2:has-text('Probe F1')").count() == 0  # not mistaken for probes
    assert page.evaluate(OVERFLOW_JS) == []
    shot(page, shots, "analysis-label-quality")
