"""The report's evidence shards checked against the run they were built from (no browser):
every quote lands with its feature and piece, only verified quotes carry a span (and the span
is the quote's text), cluster samples hold real members, scan pages the scan's answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from featdisco.report import build_report
from featdisco.report.evidence import MEMBERS_SHOWN
from tests.verify.runs import SCAN, build_evidence_run


def shard(path: Path) -> Any:
    raw = path.read_bytes()
    assert raw.startswith(b"FD.put(") and raw.endswith(b");\n")
    return json.loads(b"[" + raw[len(b"FD.put("):-len(b");\n")] + b"]")[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    run = build_evidence_run(tmp_path_factory.mktemp("report-evidence"), shared_data)
    build_report(run)
    return run


def test_quotes_land_with_their_piece(run: Path) -> None:
    data = run / "report" / "data"
    pieces = pq.read_table(run / "pieces.parquet").to_pylist()
    feats = pq.read_table(run / "features.parquet").to_pylist()
    ov = shard(data / "overview.js")["evidence"]
    assert ov["quotes"]["verified"] == sum(f["verified"] is True for f in feats)
    assert ov["quotes"]["unverified"] == sum(f["verified"] is False for f in feats) > 0
    # the transcript index of each piece, as the report numbers transcripts
    tids = list(dict.fromkeys(p["transcript_id"] for p in pieces))
    text_of = {(tids.index(p["transcript_id"]), f"{p['turn']}:{p['kind']}"): p["text"] for p in pieces}
    rows = [(int(t), key, r) for s in (data / "q").glob("*.js") for t, per in shard(s).items()
            for key, rs in per.items() for r in rs]
    assert len(rows) == sum(f["quote"] is not None for f in feats)
    for t, key, (_feature, quote, start, end, verified) in rows:
        if verified:
            assert text_of[(t, key)][start:end] == quote
        else:
            assert start is None and end is None


def test_cluster_samples_are_members(run: Path) -> None:
    feats = pq.read_table(run / "features.parquet", columns=["piece_id"]).column(0).to_pylist()
    cids = pq.read_table(run / "assignments.parquet", columns=["cluster_id"]).column(0).to_pylist()
    members: dict[int, set[str]] = {}
    for p, c in zip(feats, cids, strict=True):
        members.setdefault(c, set()).add(p)
    pages = {int(k): v for s in (run / "report" / "data" / "cq").glob("*.js") for k, v in shard(s).items()}
    assert set(pages) == set(members)
    for cid, page in pages.items():
        assert page["members"] == len(members[cid])
        assert len(page["shown"]) == min(MEMBERS_SHOWN, len(members[cid]))
        assert {it["pid"] for it in page["shown"]} <= members[cid]
        for it in page["shown"]:
            for r in it["q"]:
                a, b = (r[2] - it["off"], r[3] - it["off"]) if r[4] else (None, None)
                if a is not None and b is not None and a >= 0 and b <= len(it["text"]):
                    assert it["text"][a:b] == r[1]
            first = next((r for r in it["q"] if r[4]), None)  # the window holds the first quote
            if first is not None:
                assert it["text"][first[2] - it["off"]:first[3] - it["off"]] == first[1]


def test_scan_page_matches_the_scan(run: Path) -> None:
    scan = {r["piece_id"]: r for r in pq.read_table(run / f"scan_{SCAN}.parquet").to_pylist()}
    page = shard(run / "report" / "data" / "sc" / f"{SCAN}.js")
    ok = [r for r in scan.values() if r["status"] == "ok"]
    assert (page["n"], page["positives"], page["failed"]) == (len(ok), sum(r["answer"] for r in ok), 1)
    assert page["unverified"] == sum(r["verified"] is False for r in ok) == 2
    assert [b["column"] for b in page["by"]] == ["model"]
    for it in page["items"]:
        r = scan[it["pid"]]
        assert it["positive"] == r["answer"]
        if it["verified"]:
            assert it["text"][it["start"] - it["off"]:it["end"] - it["off"]] == r["quote"]
        else:
            assert it["start"] is None  # an unverified quote carries no span to highlight


def test_a_broken_scan_is_listed_with_its_error(run: Path, tmp_path: Path) -> None:
    (run / "scan_broken.parquet").write_bytes(b"not parquet")
    try:
        build_report(run, tmp_path / "report")
    finally:
        (run / "scan_broken.parquet").unlink()
    scans = {s["name"]: s for s in shard(tmp_path / "report" / "data" / "overview.js")["evidence"]["scans"]}
    assert "error" in scans["broken"] and "positives" in scans[SCAN]
    assert not (tmp_path / "report" / "data" / "sc" / "broken.js").exists()


def test_a_scan_page_shows_a_verified_quote_in_the_pieces_own_words(run: Path, tmp_path: Path) -> None:
    """The quote check forgives case and spacing; the scan page printed the LLM's copy ("quote:
    “…”") beside the highlighted span. It must print the piece's words."""
    import shutil

    import pyarrow as pa

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report"))
    table = pq.read_table(copy / f"scan_{SCAN}.parquet")
    shouted = [q.upper().replace(" ", "  ") if v else q
               for q, v in zip(table.column("quote").to_pylist(), table.column("verified").to_pylist(), strict=True)]
    table = table.set_column(table.column_names.index("quote"), "quote", pa.array(shouted, pa.string()))
    pq.write_table(table, copy / f"scan_{SCAN}.parquet")
    build_report(copy, search=False)
    texts = dict(zip(*pq.read_table(copy / "pieces.parquet", columns=["piece_id", "text"]).to_pydict().values(),
                     strict=True))
    items = [it for it in shard(copy / "report" / "data" / "sc" / f"{SCAN}.js")["items"] if it["verified"]]
    assert items
    for it in items:
        assert it["quote"] == texts[it["pid"]][it["start"]:it["end"]]
