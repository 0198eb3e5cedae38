"""Fixtures for report tests: one small real run with hostile text, its report, and a
headless Debian chromium driven by Playwright when both are installed.

Browser tests skip when chromium or Playwright is missing, unless FEATDISCO_BROWSER_TESTS
is ``required`` (CI sets it), where a missing browser fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featdisco.report import build_report
from tests.report.runs import IMG, build_run

CHROMIUM = os.environ.get("FEATDISCO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The fitted run, with its comparison by model and its probes, and a planted hierarchy
    (a parent whose label carries a payload) and a broken analysis file."""
    run = build_run(tmp_path_factory.mktemp("report-run"), shared_data)
    clusters = pq.read_table(run / "clusters.parquet")
    ids = clusters.column("cluster_id").to_pylist()
    # the real analyses, run on this run (they carry the hostile labels along)
    from featdisco.analysis.compare import run_compare
    from featdisco.analysis.cooccurrence import run_cooccurrence
    from featdisco.analysis.probes import run_probes

    run_compare(run, by="model")
    run_compare(run, by="source")  # a second comparison is kept beside the first
    run_probes(run)
    run_cooccurrence(run, min_support=1)
    # a comparison in which one group has no pieces of some kind (rate unknown, Wilson [0, 1])
    rates = pq.read_table(run / "analysis_compare_model_rates.parquet").to_pylist()
    empty = [{**r, "group": "no-thoughts", "count": 0, "n": 0, "rate": float("nan"), "ci_low": 0.0,
              "ci_high": 1.0} for r in rates if r["group"] == "thinker"]
    pq.write_table(pa.Table.from_pylist(rates + empty), run / "analysis_compare_planted_rates.parquet")
    pq.write_table(pq.read_table(run / "analysis_compare_model.parquet"), run / "analysis_compare_planted.parquet")
    # label quality as score-labels writes it (its LLM judge is tested in tests/analysis)
    pq.write_table(pa.Table.from_pylist([
        {"cluster_id": i, "kind": k, "label": lab, "members_shown": 10, "others_shown": 10,
         "chosen": 8, "true_positives": round(8 * (0.5 + (i % 3) / 6)), "precision": 0.5 + (i % 3) / 6,
         "recall": 0.4 + (i % 4) / 8, "f1": 0.45 + (i % 3) / 8, "status": "ok"}
        for i, k, lab in zip(ids, clusters.column("kind").to_pylist(), clusters.column("label").to_pylist(),
                             strict=True)]), run / "analysis_label_quality.parquet")
    parents = [{"cluster_id": 1000, "parent_id": None, "label": f"Parent {IMG}"}] + [
        {"cluster_id": i, "parent_id": 1000, "label": None} for i in ids]
    pq.write_table(pa.Table.from_pylist(parents), run / "analysis_hierarchy.parquet")
    (run / "analysis_broken.parquet").write_bytes(b"not parquet")
    return run


@pytest.fixture(scope="session")
def report_dir(hostile_run: Path) -> Path:
    build_report(hostile_run)
    return hostile_run / "report"


def _browser_required() -> bool:
    return os.environ.get("FEATDISCO_BROWSER_TESTS") == "required"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless chromium (Debian's, not Playwright's download, which cannot reach the net)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if _browser_required():
            pytest.fail("playwright is not installed")
        pytest.skip("playwright is not installed")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        if _browser_required():
            pytest.fail(f"no chromium at {CHROMIUM}")
        pytest.skip(f"no chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: FEATDISCO_SCREENSHOTS if set (CI keeps them), else a temp dir."""
    env = os.environ.get("FEATDISCO_SCREENSHOTS")
    path = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
