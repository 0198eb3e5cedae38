"""A curated run's report in Chromium: the overview lists every edit with its fate (a stale
one in words), hidden clusters are on no list, map or page link, and renamed ones carry
the researcher's label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from featdisco.pipeline import Pipeline
from featdisco.report import build_report
from tests.curation.conftest import clusters, config, edit, user_ids
from tests.fakes.openai_server import FakeOpenAIServer
from tests.report.conftest import browser

__all__ = ["browser"]  # the report tests' Chromium fixture, used here


@pytest.fixture()
def curated(fitted: Path, server: FakeOpenAIServer, tmp_path: Path) -> tuple[Path, int, int]:
    run = tmp_path / "run"
    shutil.copytree(fitted, run)
    a, b = user_ids(run)[:2]
    edit(run, "merge", str(a), str(b))
    edit(run, "rename", str(a), "Food, feelings and formatting")
    hidden = next(x["cluster_id"] for x in clusters(run) if x["kind"] == "response")
    edit(run, "hide", str(hidden))
    cur = json.loads((run / "curation.json").read_text())  # an edit of a cluster this run never had
    cur["edits"].append({"op": "rename", "clusters": [{"id": 99, "kind": "user", "label": "Old",
                                                       "members": ["never featurized", "nor this"]}],
                         "label": "Lost label"})
    (run / "curation.json").write_text(json.dumps(cur))
    assert Pipeline(run, config(server)).run().complete
    build_report(run, map_points=400)
    return run, a, hidden


def test_the_report_shows_edits_stale_ones_and_hides_what_was_hidden(curated: tuple[Path, int, int],
                                                                      browser: Any) -> None:
    run, renamed, hidden = curated
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    base = (run / "report" / "index.html").as_uri()
    page.goto(base + "#/")
    page.wait_for_selector("h2:has-text('Your edits (4, 1 stale)')")
    rows = page.locator(".curation table tbody tr")
    assert rows.count() == 4
    assert "stale: none of the features of user cluster 99" in rows.nth(3).inner_text()
    assert "(hidden)" in rows.nth(2).inner_text() and rows.nth(2).locator("a").count() == 0
    assert page.locator(f"a[href='#/c/{hidden}']").count() == 0
    page.goto(base + "#/clusters/response")
    page.wait_for_selector("table.clusters tbody tr")
    assert page.locator(f"table.clusters a[href='#/c/{hidden}']").count() == 0
    page.goto(base + "#/clusters/user")
    page.wait_for_selector("table.clusters tbody tr")
    assert "Food, feelings and formatting" in page.inner_text("table.clusters")
    page.goto(base + "#/map")
    page.wait_for_selector(".maplabel")
    ids = [int(x) for x in page.eval_on_selector_all(".maplabel", "els => els.map(e => e.dataset.id)")]
    assert hidden not in ids
    page.uncheck("input[data-kind='thought']")
    page.uncheck("input[data-kind='response']")
    page.wait_for_selector(f".maplabel[data-id='{renamed}']")
    assert "Food, feelings" in page.inner_text(f".maplabel[data-id='{renamed}']")
    assert errors == []
    page.close()
