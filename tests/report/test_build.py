"""The report's data, checked against the run it was built from (no browser needed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from featdisco.cli import app
from featdisco.errors import FeatdiscoError
from featdisco.report import build_report
from featdisco.report.shards import token_key
from tests.report.runs import SCRIPT


def shard(path: Path) -> tuple[str, Any]:
    """Parse ``FD.put(key, value);`` back into (key, value): the file must be exactly that."""
    raw = path.read_bytes()
    assert raw.startswith(b"FD.put(") and raw.endswith(b");\n")
    body = raw[len(b"FD.put("):-len(b");\n")]
    key, value = json.loads(b"[" + body + b"]")
    return key, value


def all_transcripts(report: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted((report / "data" / "t").glob("*.js")):
        key, value = shard(p)
        assert key == f"t/{p.stem}"
        rows.extend(value["rows"])
    return sorted(rows, key=lambda r: r["i"])


def test_every_piece_and_feature_lands_once(hostile_run: Path, report_dir: Path) -> None:
    pieces = pq.read_table(hostile_run / "pieces.parquet")
    features = pq.read_table(hostile_run / "features.parquet")
    rows = all_transcripts(report_dir)
    assert [r["i"] for r in rows] == list(range(len(rows)))
    assert {r["id"] for r in rows} == set(pieces.column("transcript_id").to_pylist())
    assert sum(len(r["pieces"]) for r in rows) == pieces.num_rows
    assert sum(len(p["f"]) for r in rows for p in r["pieces"]) == features.num_rows
    texts = {t for r in rows for p in r["pieces"] for t in [p["text"]]}
    assert any(SCRIPT in t for t in texts)  # hostile text kept verbatim, as data


def test_overview_and_cluster_pages(hostile_run: Path, report_dir: Path) -> None:
    _, ov = shard(report_dir / "data" / "overview.js")
    clusters = pq.read_table(hostile_run / "clusters.parquet").to_pylist()
    assert ov["n_clusters"] == len(clusters)
    assert ov["pieces"] == pq.read_metadata(hostile_run / "pieces.parquet").num_rows
    private = {c["cluster_id"] for c in clusters if c["private"]}
    assert private
    for info in ov["kinds"].values():
        assert not set(info["top"]) & private
        assert sum(info["interest"]["counts"]) == info["clusters"]
    assert {a["name"] for a in ov["analyses"]} == {"compare_model", "compare_model_rates", "compare_source",
                                                      "compare_source_rates", "probes", "hierarchy",
                                                      "cooccurrence", "label_quality", "compare_planted",
                                                      "compare_planted_rates"}  # broken one skipped
    pages = {c["id"]: c for p in (report_dir / "data" / "c").glob("*.js") for c in shard(p)[1]}
    assert set(pages) == {c["cluster_id"] for c in clusters}
    for c in clusters:
        page = pages[c["cluster_id"]]
        assert sum(n for _, n in page["members"]) <= c["size"]
        assert page["members"] and page["pieces"]
        assert all(p["match"] for p in page["pieces"])  # each example really has a member feature
        assert page["description"] == c["description"]


def test_search_shards(report_dir: Path) -> None:
    _, s = shard(report_dir / "data" / "s" / f"{token_key('melancholy')}.js")
    assert any(f[0] == "Melancholy tone" for f in s["melancholy"]["f"])
    _, s = shard(report_dir / "data" / "s" / f"{token_key('hawaii')}.js")
    assert len(s["hawaii"]["t"]) >= 2
    assert token_key("日本") == "u65e5u672c" and token_key("a") == "a"


def test_same_report_when_pieces_are_not_grouped(hostile_run: Path, tmp_path: Path) -> None:
    """A pieces file written by hand may interleave transcripts: same content, sorted in memory."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(hostile_run, run, ignore=shutil.ignore_patterns("report", "*.sqlite", "embed_cache"))
    pieces = pq.read_table(run / "pieces.parquet")
    pq.write_table(pieces.take(list(range(pieces.num_rows))[::-1]), run / "pieces.parquet")
    build_report(run)
    a = {r["id"]: sorted((p["kind"], p["turn"], p["text"], sorted(map(tuple, p["f"]))) for p in r["pieces"])
         for r in all_transcripts(hostile_run / "report")}
    b = {r["id"]: sorted((p["kind"], p["turn"], p["text"], sorted(map(tuple, p["f"]))) for p in r["pieces"])
         for r in all_transcripts(run / "report")}
    assert a == b


def test_unfinished_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FeatdiscoError, match="not a finished run"):
        build_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, FeatdiscoError)


def test_cli_report_and_serve(hostile_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["report", str(hostile_run), "-o", str(out), "--no-search"])
    assert result.exit_code == 0, result.output
    assert "first view loads" in result.output
    assert (out / "index.html").exists() and not (out / "data" / "s").exists()
    _, ov = shard(out / "data" / "overview.js")
    assert ov["search"] is False

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "featdisco", "serve", str(hostile_run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert b'<script src="app.js">' in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/overview.js", timeout=2) as r:
            assert r.read().startswith(b"FD.put(")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_shards_are_json_whatever_the_text(tmp_path: Path) -> None:
    from featdisco.report.shards import ShardWriter

    w = ShardWriter(tmp_path)
    nasty = "</script><script>x()</script>\u2028\u2029\"'`${x}\\"
    w.write("x.js", "x", {"a": nasty, 1: float("nan")})
    key, value = shard(tmp_path / "x.js")
    assert key == "x" and value["a"] == nasty and value["1"] is None
    assert orjson.loads(orjson.dumps(value)) == value


def test_the_overview_opens_on_the_runs_finding(hostile_run: Path, tmp_path: Path) -> None:
    """`featdisco demo findings` keeps its lines in the manifest; the overview shows them first."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(hostile_run, run, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["findings"] = ["FINDING: what differs", "top difference: cluster 3 (response) \"Refuses\""]
    (run / "manifest.json").write_text(json.dumps(manifest))
    build_report(run, tmp_path / "site", search=False)
    _, ov = shard(tmp_path / "site" / "data" / "overview.js")
    assert ov["findings"] == manifest["findings"]
    app_js = (tmp_path / "site" / "static" / "app.js") if (tmp_path / "site" / "static").exists() else \
        next((tmp_path / "site").rglob("app.js"))
    assert 'show(el("h1", null, "Run overview"), findings,' in app_js.read_text(encoding="utf-8")


def test_an_interrupted_build_keeps_the_last_report_whole(hostile_run: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during `featdisco report` emptied data/ first, so the report left behind was an
    index.html over missing shards (no overview.js): 'finished work is kept' was not true of it."""
    import shutil

    import featdisco.report.build as build

    run = tmp_path / "run"
    shutil.copytree(hostile_run, run, ignore=shutil.ignore_patterns("report", "*.sqlite", "embed_cache"))
    build_report(run)
    before = {p.relative_to(run): p.read_bytes() for p in (run / "report").rglob("*") if p.is_file()}
    assert Path("report/data/overview.js") in before

    def interrupted(*_args: object, **_kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "write_analyses", interrupted)  # late in the build: most shards written
    with pytest.raises(KeyboardInterrupt):
        build_report(run)
    after = {p.relative_to(run): p.read_bytes() for p in (run / "report").rglob("*") if p.is_file()}
    assert after == before  # the last report, whole; nothing half-built beside it
    monkeypatch.undo()
    build_report(run)
    assert shard(run / "report" / "data" / "overview.js")[0] == "overview"
    assert not [p for p in (run / "report").iterdir() if p.name.startswith(".")]


def test_a_report_never_replaces_someone_elses_data_folder_or_page(hostile_run: Path, tmp_path: Path) -> None:
    """`featdisco report RUN -o .` in a project replaced its data/ folder (the build swaps data/
    in whole) and its index.html without a word. A folder holding a report, or new files
    beside a report's, is fine."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "survey.csv").write_text("precious\n")
    result = CliRunner().invoke(app, ["report", str(hostile_run), "-o", str(project), "--no-search"])
    assert isinstance(result.exception, FeatdiscoError), result.output
    assert f"{project} holds data/, not from a featdisco report" in str(result.exception)
    assert (project / "data" / "survey.csv").read_text() == "precious\n" and not (project / "index.html").exists()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>my site</html>")
    with pytest.raises(FeatdiscoError, match=r"holds index\.html, not from a featdisco report"):
        build_report(hostile_run, site, search=False)
    assert (site / "index.html").read_text() == "<html>my site</html>"
    out = tmp_path / "report"
    build_report(hostile_run, out, search=False)
    (out / "notes.txt").write_text("mine")
    build_report(hostile_run, out, search=False)  # a report is rebuilt in place, other files left alone
    assert (out / "notes.txt").read_text() == "mine" and (out / "data" / "overview.js").exists()
