"""The report's map: a capped UMAP layout computed by `featdisco report`, drawn in the
browser (headless Debian chromium) with cluster labels placed over the points; labels are
visible, a click on a label or on a dot opens the cluster, zoom and pan move the map, kinds
toggle, hover names the cluster, and private and hidden clusters stay off it."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featdisco.report import build_report
from featdisco.report.map import map_layout


def test_layout_is_capped_and_places_every_cluster(hostile_run: Path) -> None:
    clusters = pq.read_table(hostile_run / "clusters.parquet")
    features = pq.read_table(hostile_run / "features.parquet").num_rows
    layout = map_layout(hostile_run, clusters, max_points=40)
    shard = layout.shard
    assert shard["points"] <= 40 and len(shard["x"]) == len(shard["c"]) == shard["points"] < features
    assert shard["features_drawn"] == shard["points"] - clusters.num_rows  # the rest are centroids
    assert set(layout.positions) == set(clusters.column("cluster_id").to_pylist())
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in layout.positions.values())
    assert min(shard["x"]) >= 0 and max(shard["x"]) <= shard["grid"]
    assert all(isinstance(v, int) for v in shard["x"] + shard["y"] + shard["c"])  # numbers in the page, not text


def test_the_map_is_umap_when_the_extra_is_installed(hostile_run: Path) -> None:
    pytest.importorskip("umap")  # `make test` installs featdisco[map]
    layout = map_layout(hostile_run, pq.read_table(hostile_run / "clusters.parquet"), max_points=60)
    assert layout.shard["points"] >= 16 and layout.shard["method"] == "umap" and layout.shard["note"] is None


def test_without_umap_the_map_is_a_labelled_pca_layout_that_says_so(
        hostile_run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now fails as when not installed
    clusters = pq.read_table(hostile_run / "clusters.parquet")
    with caplog.at_level(logging.WARNING, logger="featdisco.report"):
        layout = map_layout(hostile_run, clusters, max_points=60)
    shard = layout.shard
    assert shard["points"] >= 16 and shard["method"] == "pca" and "featdisco[map]" in shard["note"]
    assert any("featdisco[map]" in r.getMessage() for r in caplog.records)
    # still a map: every cluster labelled at a place of its own, points spread over both axes
    assert set(layout.positions) == set(clusters.column("cluster_id").to_pylist())
    assert len(set(layout.positions.values())) > 1
    assert len(set(shard["x"])) > 1 and len(set(shard["y"])) > 1


def test_hidden_clusters_are_left_off_the_map(hostile_run: Path) -> None:
    clusters = pq.read_table(hostile_run / "clusters.parquet")
    gone = clusters.column("cluster_id")[0].as_py()
    hidden = pa.array([c == gone for c in clusters.column("cluster_id").to_pylist()])
    table = clusters.drop_columns([c for c in ("hidden",) if c in clusters.column_names]).append_column("hidden", hidden)
    layout = map_layout(hostile_run, table, max_points=200)
    assert gone not in layout.positions and gone not in layout.shard["c"]
    assert len(layout.positions) == clusters.num_rows - 1


@pytest.fixture()
def map_page(browser: Any, report_dir: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto((report_dir / "index.html").as_uri() + "#/map")
    pg.wait_for_selector(".maplabel")
    yield pg
    assert pg.evaluate("window.__xss") is None
    assert errors == []
    context.close()


def _private(report_dir: Path) -> tuple[int, str]:
    for kind in ("user", "thought", "response"):
        raw = (report_dir / "data" / "k" / f"{kind}.js").read_bytes()
        for r in orjson.loads(raw[raw.index(b",") + 1:raw.rindex(b")")]):
            if r[6]:
                return r[0], kind
    raise AssertionError("the hostile run has a private cluster")


def label_ids(pg: Any) -> list[int]:
    return [int(x) for x in pg.eval_on_selector_all(".maplabel", "els => els.map(e => e.dataset.id)")]


def test_labels_are_visible_and_a_click_opens_the_cluster(map_page: Any, shots: Path) -> None:
    labels = map_page.locator(".maplabel")
    assert labels.count() >= 3
    first = labels.first
    assert first.is_visible() and "Cluster about" in first.inner_text()
    # the planted payload in every label is shown as text, not run
    assert "<img" in first.inner_text()
    map_page.screenshot(path=str(shots / "map-labels.png"), full_page=True)
    cid = first.get_attribute("data-id")
    first.click()
    map_page.wait_for_selector("h2:has-text('Member features')")
    assert map_page.url.endswith(f"#/c/{cid}")


def test_a_click_on_a_dot_opens_its_cluster(map_page: Any) -> None:
    # a painted pixel of the canvas that no label covers
    spot = map_page.evaluate("""() => {
        const c = document.querySelector('canvas.map'), r = c.getBoundingClientRect(), s = c.width / r.width;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < d.length; i += 4 * 7) {
          if (d[i] < 200) continue;
          const px = (i >> 2) % c.width, py = Math.floor((i >> 2) / c.width);
          const x = r.left + px / s, y = r.top + py / s;
          if (document.elementFromPoint(x, y) === c) return [x, y];
        }
        return null; }""")
    assert spot is not None
    map_page.mouse.move(*spot)
    assert map_page.locator("#tip").is_visible() and "features" in map_page.inner_text("#tip")
    map_page.mouse.click(*spot)
    map_page.wait_for_selector("h2:has-text('Member features')")
    assert "#/c/" in map_page.url


def test_zoom_pan_and_hover(map_page: Any) -> None:
    label = map_page.locator(".maplabel").first
    cid = label.get_attribute("data-id")
    before = label.bounding_box()
    box = map_page.locator(".mapbox").bounding_box()
    map_page.mouse.move(box["x"] + 40, box["y"] + 40)
    map_page.mouse.wheel(0, -500)  # zoom in about the corner: every label moves away from it
    map_page.wait_for_timeout(100)
    moved = map_page.locator(f".maplabel[data-id='{cid}']")
    if moved.count():
        after = moved.bounding_box()
        assert (after["x"], after["y"]) != (before["x"], before["y"])
    map_page.click(".mapbtn:text-is('reset')")
    map_page.wait_for_timeout(100)
    start = map_page.locator(f".maplabel[data-id='{cid}']").bounding_box()
    # drag from a corner, moving the label towards the middle (so it stays on the map)
    dx = 50 if start["x"] < box["x"] + box["width"] / 2 else -50
    dy = 30 if start["y"] < box["y"] + box["height"] / 2 else -30
    x0, y0 = box["x"] + (10 if dx > 0 else box["width"] - 10), box["y"] + (10 if dy > 0 else box["height"] - 10)
    map_page.mouse.move(x0, y0)
    map_page.mouse.down()
    map_page.mouse.move(x0 + dx, y0 + dy, steps=5)
    map_page.mouse.up()
    map_page.wait_for_timeout(100)
    dragged = map_page.locator(f".maplabel[data-id='{cid}']").bounding_box()
    assert dragged["x"] - start["x"] == pytest.approx(dx, abs=2)
    assert dragged["y"] - start["y"] == pytest.approx(dy, abs=2)
    assert "#/map" in map_page.url  # a drag is not a click
    map_page.hover(f".maplabel[data-id='{cid}']")
    assert map_page.locator("#tip").is_visible() and "features" in map_page.inner_text("#tip")


def test_kinds_toggle_and_private_clusters_stay_off_until_asked(map_page: Any, report_dir: Path,
                                                                 shots: Path) -> None:
    private, kind = _private(report_dir)
    for other in ("user", "thought", "response"):
        if other != kind:
            map_page.uncheck(f"input[data-kind='{other}']")
    map_page.wait_for_timeout(100)
    shown = label_ids(map_page)
    assert shown and private not in shown
    kinds = {c["cluster_id"]: c["kind"] for c in pq.read_table(report_dir.parent / "clusters.parquet").to_pylist()}
    assert {kinds[i] for i in shown} == {kind}
    map_page.check("#private")
    map_page.wait_for_selector(".maplabel")
    for other in ("user", "thought", "response"):
        if other != kind:
            map_page.uncheck(f"input[data-kind='{other}']")
    map_page.wait_for_selector(f".maplabel[data-id='{private}']")
    map_page.screenshot(path=str(shots / "map-private-shown.png"), full_page=True)


def test_report_of_a_curated_run_leaves_hidden_clusters_off(hostile_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(hostile_run, run, ignore=shutil.ignore_patterns("report"))
    clusters = pq.read_table(run / "clusters.parquet")
    gone = clusters.column("cluster_id")[1].as_py()
    hidden = pa.array([c == gone for c in clusters.column("cluster_id").to_pylist()])
    pq.write_table(clusters.drop_columns([c for c in ("hidden",) if c in clusters.column_names])
                   .append_column("hidden", hidden), run / "clusters.parquet")
    build_report(run, map_points=500)
    raw = (run / "report" / "data" / "map.js").read_bytes()
    shard = orjson.loads(raw[raw.index(b",") + 1:raw.rindex(b")")])
    assert gone not in shard["c"] and shard["cap"] == 500


@pytest.fixture(scope="module")
def curated(hostile_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """The hostile run with edits made through `featdisco edit`: two user clusters merged and
    renamed, a response cluster hidden, and one edit of a cluster the run never had."""
    import json
    import os

    from typer.testing import CliRunner

    from featdisco.cli import app
    from featdisco.pipeline import Pipeline, config_from_manifest
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.report.runs import hostile_handler

    run = tmp_path_factory.mktemp("curated") / "run"
    shutil.copytree(hostile_run, run, ignore=shutil.ignore_patterns("report"))
    table = pq.read_table(run / "clusters.parquet").to_pylist()
    a, b = [c["cluster_id"] for c in table if c["kind"] == "user"][:2]
    hidden = next(c["cluster_id"] for c in table if c["kind"] == "response")

    def edit(*args: str) -> None:
        result = CliRunner().invoke(app, ["edit", "--no-apply", str(run), *args])
        assert result.exit_code == 0, result.output

    edit("merge", str(a), str(b))
    edit("rename", str(a), "Food, feelings and formatting")  # found after the merge by its members
    edit("hide", str(hidden))
    cur = json.loads((run / "curation.json").read_text())  # and an edit of a cluster this run never had
    cur["edits"].append({"op": "rename", "clusters": [{"id": 99, "kind": "user", "label": "Old",
                                                       "members": ["never featurized", "nor this"]}],
                         "label": "Lost label"})
    (run / "curation.json").write_text(json.dumps(cur))
    os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(hostile_handler) as server:
        cfg = config_from_manifest(run, {"base_url": server.base_url})
        assert Pipeline(run, cfg).run(stages=("cluster", "name", "curate", "rate", "assemble")).complete
    build_report(run, map_points=400)
    merged = next(c["cluster_id"] for c in pq.read_table(run / "clusters.parquet").to_pylist()
                  if c["label"] == "Food, feelings and formatting")
    now_hidden = [c["cluster_id"] for c in pq.read_table(run / "clusters.parquet").to_pylist() if c["hidden"]]
    assert len(now_hidden) == 1
    return run, merged, now_hidden[0]


def test_a_curated_report_shows_edits_and_stale_ones_and_leaves_hidden_clusters_out(
        browser: Any, curated: tuple[Path, int, int]) -> None:
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
