"""Evidence in the report: the quotes behind features, the members of each cluster, and a
page per scan, each with what the labelling mode needs (piece ids and the LLM's verdict).

Shards written here (all optional for the page: a run without quotes or scans has none):

* ``q/<s>.js``: per transcript of transcript shard ``s``, per piece (``turn:kind``), each
  quoted feature as ``[feature, quote, start, end, verified]``: chips on the transcript page
  highlight their span;
* ``cq/<s>.js``: per cluster of cluster shard ``s``, a random sample of member pieces (a
  random sample, not the best examples, so labels estimate precision without bias) with a
  window of their text and their quotes for the cluster;
* ``sc/<name>.js``: a scan's question, overall and per-group prevalence, and samples of hits
  and non-hits with their quote, span and reason.

An unverified quote (not found in the piece) travels with ``verified: false`` and the page
marks it as such; only verified spans are ever highlighted.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featdisco.analysis.stats import wilson_interval
from featdisco.errors import FeatdiscoError
from featdisco.evidence.validate import features_with_clusters, scan_names, scan_predictions
from featdisco.report.shards import ShardWriter
from featdisco.report.tables import BATCH, CLUSTERS_PER_SHARD, TRANSCRIPTS_PER_SHARD, PieceOrder
from featdisco.rundir import RunDir

MEMBERS_SHOWN = 20  # member pieces per cluster page, to read and label
HITS_SHOWN = 60  # scan hits per scan page
OTHERS_SHOWN = 20  # scan non-hits per scan page (labelling them measures recall)
WINDOW = 900  # characters of a piece's text shown around its quote
_LEAD = 250  # of them before the quote


def run_key(manifest: dict[str, Any], n_pieces: int) -> str:
    """A stable name for the run, so labels kept in the browser belong to one run."""
    raw = orjson.dumps([manifest.get("created"), n_pieces, sorted((manifest.get("config") or {}).items())],
                       default=str)
    return hashlib.sha256(raw).hexdigest()[:16]


def _window(text: str, start: int | None) -> tuple[str, int]:
    """A window of ``text`` that holds position ``start`` (the whole text when short), and
    the offset of its first character."""
    if len(text) <= WINDOW:
        return text, 0
    a = 0 if start is None else max(0, min(start - _LEAD, len(text) - WINDOW))
    return text[a:a + WINDOW], a


def _texts(run: Path, rows: set[int]) -> dict[int, dict[str, Any]]:
    """piece_id, kind, turn, model and text of the wanted piece rows, in one streaming pass."""
    out: dict[int, dict[str, Any]] = {}
    if not rows:
        return out
    wanted = np.fromiter(sorted(rows), dtype=np.int64)
    start = 0
    with pq.ParquetFile(run / "pieces.parquet") as pf:
        for batch in pf.iter_batches(batch_size=BATCH, columns=["piece_id", "kind", "turn", "model", "text"]):
            idx = np.arange(start, start + batch.num_rows)
            hit = idx[np.isin(idx, wanted, assume_unique=True)]
            if len(hit):
                sub = batch.take(pa.array(hit - start)).to_pylist()
                out.update(zip(hit.tolist(), sub, strict=True))
            start += batch.num_rows
    return out


def _has_quotes(run: Path) -> bool:
    return "quote" in pq.read_schema(run / "features.parquet").names


def write_evidence(run_dir: Path, writer: ShardWriter, order: PieceOrder, clusters: pa.Table,
                   manifest: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Write the evidence shards; returns the overview's ``evidence`` entry."""
    rd = RunDir(run_dir)
    pids = pq.read_table(run_dir / "pieces.parquet", columns=["piece_id"]).column(0)
    row_of = {p: i for i, p in enumerate(pids.to_pylist())}
    quoted = _has_quotes(run_dir)
    cols = ["piece_id", "text"] + (["quote", "quote_start", "quote_end", "verified"] if quoted else [])
    feats = features_with_clusters(rd, cols)
    counts: dict[str, Any] | None = None
    if quoted:
        counts = _quote_counts(feats)
        _write_transcript_quotes(run_dir, writer, order, feats, row_of)
    _write_cluster_members(run_dir, writer, order, clusters, feats, row_of, quoted, seed)
    scans = []
    for name in scan_names(rd):
        try:
            scans.append(_write_scan(rd, writer, order, name, row_of, seed))
        except (OSError, KeyError, pa.ArrowInvalid, FeatdiscoError) as e:  # shown on the page, not dropped
            scans.append({"name": name, "error": f"{type(e).__name__}: {e}"})
    return {"run_key": run_key(manifest, len(row_of)), "quotes": counts, "scans": scans}


def _quote_counts(feats: pa.Table) -> dict[str, int]:
    ver = feats.column("verified")
    quote = feats.column("quote")
    return {"features": feats.num_rows,
            "verified": int(pc.sum(pc.equal(ver, True)).as_py() or 0),
            "unverified": int(pc.sum(pc.equal(ver, False)).as_py() or 0),
            "empty": int(pc.sum(pc.equal(quote, "")).as_py() or 0),
            "none": int(quote.null_count)}


def _evidence_row(r: dict[str, Any]) -> list[Any]:
    return [r["text"], r["quote"], r["quote_start"], r["quote_end"], r["verified"]]


def _write_transcript_quotes(run: Path, writer: ShardWriter, order: PieceOrder, feats: pa.Table,
                             row_of: dict[str, int]) -> None:
    has = feats.filter(pc.is_valid(feats.column("quote")))
    meta = pq.read_table(run / "pieces.parquet", columns=["turn", "kind"])
    turns, kinds = meta.column("turn").to_pylist(), meta.column("kind").to_pylist()
    shards: dict[int, dict[int, dict[str, list[list[Any]]]]] = {}
    for r in has.select(["piece_id", "text", "quote", "quote_start", "quote_end", "verified"]).to_pylist():
        pos = row_of.get(r["piece_id"])
        if pos is None:
            continue
        t = int(order.tidx[pos])
        piece = shards.setdefault(t // TRANSCRIPTS_PER_SHARD, {}).setdefault(t, {})
        piece.setdefault(f"{turns[pos]}:{kinds[pos]}", []).append(_evidence_row(r))
    for s, value in shards.items():
        writer.write(f"q/{s}.js", f"q/{s}", value)


def _write_cluster_members(run: Path, writer: ShardWriter, order: PieceOrder, clusters: pa.Table,
                           feats: pa.Table, row_of: dict[str, int], quoted: bool, seed: int) -> None:
    """A random sample of each cluster's member pieces, with their quotes for the cluster."""
    pairs = feats.select(["cluster_id", "piece_id"]).group_by(["cluster_id", "piece_id"]).aggregate([])
    members: dict[int, list[str]] = {}
    for cid, pid in zip(pairs.column("cluster_id").to_pylist(), pairs.column("piece_id").to_pylist(), strict=True):
        if cid >= 0:
            members.setdefault(cid, []).append(pid)
    chosen: dict[int, list[str]] = {}
    for cid, pieces in members.items():
        pieces.sort()
        chosen[cid] = sorted(random.Random(seed * 1_000_003 + cid).sample(pieces, min(MEMBERS_SHOWN, len(pieces))))
    wanted = {p for ps in chosen.values() for p in ps}
    texts = _texts(run, {row_of[p] for p in wanted if p in row_of})
    quotes: dict[tuple[int, str], list[list[Any]]] = {}
    if quoted:
        keep = pc.is_in(feats.column("piece_id"), value_set=pa.array(sorted(wanted), pa.string()))
        for r in feats.filter(keep).to_pylist():
            quotes.setdefault((r["cluster_id"], r["piece_id"]), []).append(_evidence_row(r))
    by_shard: dict[int, dict[int, Any]] = {}
    for cid in clusters.column("cluster_id").to_pylist():
        items = []
        for pid in chosen.get(cid, []):
            pos = row_of.get(pid)
            if pos is None or pos not in texts:
                continue
            q = quotes.get((cid, pid), [])
            first = next((e[2] for e in q if e[4] and e[2] is not None), None)
            info = texts[pos]
            text, off = _window(info["text"] or "", first)
            items.append({"pid": pid, "t": int(order.tidx[pos]), "kind": info["kind"], "turn": info["turn"],
                          "model": info["model"], "text": text, "off": off, "len": len(info["text"] or ""),
                          "q": q})
        by_shard.setdefault(cid // CLUSTERS_PER_SHARD, {})[cid] = {
            "members": len(members.get(cid, [])), "shown": items}
    for s, value in by_shard.items():
        writer.write(f"cq/{s}.js", f"cq/{s}", value)


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _write_scan(run: RunDir, writer: ShardWriter, order: PieceOrder, name: str,
                row_of: dict[str, int], seed: int) -> dict[str, Any]:
    """``sc/<name>.js``; returns the scan's line for the overview."""
    table = pq.read_table(run.file(f"scan_{name}.parquet"))
    pred = scan_predictions(run, name)
    info = dict((run.manifest.get("scans") or {}).get(name) or {})
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok" and r["piece_id"] in row_of]
    hits = [r for r in ok if pred.get(r["piece_id"])]
    others = [r for r in ok if pred.get(r["piece_id"]) is False]
    rng = random.Random(seed)
    shown_hits = sorted(rng.sample(range(len(hits)), min(HITS_SHOWN, len(hits))))
    shown_others = sorted(rng.sample(range(len(others)), min(OTHERS_SHOWN, len(others))))
    picked = [hits[i] for i in shown_hits] + [others[i] for i in shown_others]
    texts = _texts(run.path, {row_of[r["piece_id"]] for r in picked})
    items = []
    for r in picked:
        pos = row_of[r["piece_id"]]
        span = r.get("span")
        start = span["start"] if span and r.get("verified") else None
        text, off = _window(texts[pos]["text"] or "", start)
        items.append({"pid": r["piece_id"], "t": int(order.tidx[pos]), "kind": r["kind"],
                      "turn": texts[pos]["turn"], "model": texts[pos]["model"],
                      "answer": r["answer"], "positive": bool(pred.get(r["piece_id"])), "quote": r.get("quote"),
                      "start": start, "end": span["end"] if start is not None else None,
                      "verified": r.get("verified"), "reason": r.get("reason"), "text": text, "off": off,
                      "len": len(texts[pos]["text"] or "")})
    by = []
    for path in sorted(run.path.glob(f"scan_{name}_by_*.parquet")):
        g = pq.read_table(path).to_pylist()
        by.append({"column": path.stem.removeprefix(f"scan_{name}_by_"),
                   "rows": [{k: _clean(v) for k, v in r.items()} for r in g]})
    quotes = [r.get("verified") for r in ok if r.get("verified") is not None]
    lo, hi = wilson_interval(len(hits), len(ok))
    summary = {"name": name, "question": info.get("question"), "answer": info.get("answer"),
               "scanned": len(rows), "n": len(ok), "positives": len(hits),
               "rate": len(hits) / len(ok) if ok else None, "ci_low": float(lo), "ci_high": float(hi),
               "failed": sum(r["status"] != "ok" for r in rows),
               "quotes": len(quotes), "unverified": quotes.count(False)}
    writer.write(f"sc/{name}.js", f"sc/{name}", {**summary, "by": by, "items": items,
                                                 "hits_shown": len(shown_hits), "others_shown": len(shown_others),
                                                 "others": len(others)})
    return summary
