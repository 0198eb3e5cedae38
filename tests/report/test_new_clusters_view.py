"""A transform's candidate new clusters (issue 15 item 5) on the report's overview, in
Chromium: listed with kind, size and examples, hostile text shown as text."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.report import build_report
from tests.report.runs import IMG


def test_new_in_this_data_section(browser: Any, hostile_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(hostile_run, run, ignore=shutil.ignore_patterns("report"))
    pq.write_table(pa.Table.from_pylist([
        {"new_cluster": 0, "label": "Asks about space travel", "kind": "user", "size": 227, "pieces": 200,
         "examples": ["Wonders about life on Mars", "Asks about space travel"], "nearest_label": "Travel plans"},
        {"new_cluster": 1, "label": f"Hostile {IMG}", "kind": "response", "size": 12, "pieces": 12,
         "examples": [IMG], "nearest_label": IMG},
    ]), run / "new_clusters.parquet")
    build_report(run)
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((run / "report" / "index.html").as_uri())
    page.wait_for_selector("h2:has-text('New in this data')")
    rows = page.locator("table.newclusters tbody tr")
    assert rows.count() == 2
    first = rows.nth(0).inner_text()
    assert "Asks about space travel" in first and "227" in first and "Wonders about life on Mars" in first
    assert IMG in rows.nth(1).inner_text()  # shown as text, never run
    assert page.evaluate("window.__xss") is None and errors == []
    context.close()
    # a fitted run (no transform) has no such section
    plain = tmp_path / "plain"
    shutil.copytree(hostile_run, plain, ignore=shutil.ignore_patterns("report"))
    build_report(plain)
    context = browser.new_context()
    page = context.new_page()
    page.goto((plain / "report" / "index.html").as_uri())
    page.wait_for_selector("h1:has-text('Run overview')")
    assert page.locator("h2:has-text('New in this data')").count() == 0
    context.close()
