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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from featdisco.analysis.stats import wilson_interval
from featdisco.errors import FeatdiscoError
from featdisco.evidence.validate import features_with_clusters, scan_names, scan_predictions
from featdisco.report.shards import ShardWriter
from featdisco.report.tables import BATCH, CLUSTERS_PER_SHARD, TRANSCRIPTS_PER_SHARD, PieceOrder
from featdisco.rundir import RunDir

MEMBERS_SHOWN = 12  # member pieces per cluster page, to read and label
HITS_SHOWN = 60  # scan hits per scan page
OTHERS_SHOWN = 20  # scan non-hits per scan page (labelling them measures recall)
# Characters of a piece's text shown around its quote: short on cluster pages (a 20k-cluster
# run holds 240k of them, about 120 MB), longer on the few scan pages.
MEMBER_WINDOW = 500
SCAN_WINDOW = 900


class _PieceText(TypedDict):
    """A piece shown on a page, as read from pieces.parquet."""

    piece_id: str
    kind: str
    turn: int
    model: str | None
    text: str | None


class _QuoteRow(TypedDict):
    """A feature with its evidence quote, as read from features.parquet."""

    text: str
    quote: str | None
    quote_start: int | None
    quote_end: int | None
    verified: bool | None


class _Member(TypedDict):
    """A member piece shown on a cluster's page: a window of its text and its quotes."""

    pid: str
    t: int  # transcript index
    kind: str
    turn: int
    model: str | None
    text: str
    off: int  # the window's first character in the piece
    len: int
    q: list[list[Any]]  # the quotes' evidence rows (see _evidence_row)


class _ScanItem(TypedDict):
    """A scanned piece shown on a scan's page."""

    pid: str
    t: int
    kind: str
    turn: int
    model: str | None
    answer: Any  # as the scan's --answer kind: bool, int or a label
    positive: bool
    quote: str | None
    start: int | None
    end: int | None
    verified: bool | None
    reason: str | None
    text: str
    off: int
    len: int


class ScanLine(TypedDict):
    """A scan's line in the overview (and the head of its page)."""

    name: str
    question: str | None
    answer: str | None
    scanned: int
    n: int
    positives: int
    rate: float | None
    ci_low: float
    ci_high: float
    failed: int
    quotes: int
    unverified: int
    stale: bool
    refresh: str | None


class ScanFailure(TypedDict):
    """A scan the report could not read, shown on the page instead of dropped."""

    name: str
    error: str


class EvidenceOverview(TypedDict):
    """The overview's ``evidence`` entry."""

    run_key: str
    quotes: dict[str, int] | None
    scans: list[ScanLine | ScanFailure]


def run_key(manifest: Mapping[str, object], n_pieces: int) -> str:
    """A name for the run's clusters, so labels kept in the browser belong to one run: the
    same across rebuilds and reruns that leave the clusters as they were, new when they
    are redone (cluster ids would then mean other clusters)."""
    stages = manifest.get("stages")
    cluster = stages.get("cluster") if isinstance(stages, Mapping) else None
    fingerprint = cluster.get("fingerprint") if isinstance(cluster, Mapping) else None
    raw = orjson.dumps([manifest.get("created"), n_pieces, fingerprint], default=str)
    return hashlib.sha256(raw).hexdigest()[:16]


def _window(text: str, start: int | None, size: int) -> tuple[str, int]:
    """A window of ``size`` characters of ``text`` that holds position ``start`` (a quarter of
    it before), the whole text when short; and the offset of its first character."""
    if len(text) <= size:
        return text, 0
    a = 0 if start is None else max(0, min(start - size // 4, len(text) - size))
    return text[a:a + size], a


def _texts(run: Path, rows: set[int]) -> dict[int, _PieceText]:
    """piece_id, kind, turn, model and text of the wanted piece rows, in one streaming pass."""
    out: dict[int, _PieceText] = {}
    if not rows:
        return out
    wanted = np.fromiter(sorted(rows), dtype=np.int64)
    start = 0
    with pq.ParquetFile(run / "pieces.parquet") as pf:
        for batch in pf.iter_batches(batch_size=BATCH, columns=["piece_id", "kind", "turn", "model", "text"]):
            idx = np.arange(start, start + batch.num_rows)
            hit = idx[np.isin(idx, wanted, assume_unique=True)]
            if len(hit):
                sub = cast(list[_PieceText], batch.take(pa.array(hit - start)).to_pylist())
                out.update(zip(hit.tolist(), sub, strict=True))
            start += batch.num_rows
    return out


def _has_quotes(run: Path) -> bool:
    return "quote" in pq.read_schema(run / "features.parquet").names


def write_evidence(run_dir: Path, writer: ShardWriter, order: PieceOrder, clusters: pa.Table,
                   manifest: Mapping[str, object], seed: int = 0) -> EvidenceOverview:
    """Write the evidence shards; returns the overview's ``evidence`` entry.

    Columnar throughout: feature rows become Python objects one transcript shard at a time,
    and only for the pieces sampled onto cluster and scan pages, so a run of millions of
    features is handled in the memory of its Arrow columns."""
    rd = RunDir(run_dir)
    pids = pq.read_table(run_dir / "pieces.parquet", columns=["piece_id"]).column(0).combine_chunks()
    quoted = _has_quotes(run_dir)
    cols = ["piece_id", "text"] + (["quote", "quote_start", "quote_end", "verified"] if quoted else [])
    feats = features_with_clusters(rd, cols)
    pos = _rows_of(feats.column("piece_id"), pids)
    counts: dict[str, int] | None = None
    if quoted:
        counts = _quote_counts(feats)
        _write_transcript_quotes(run_dir, writer, order, feats, pos)
    _write_cluster_members(run_dir, writer, order, clusters, feats, pos, quoted, seed)
    scans: list[ScanLine | ScanFailure] = []
    for name in scan_names(rd):
        try:
            scans.append(_write_scan(rd, writer, order, name, pids, seed))
        except (OSError, KeyError, pa.ArrowInvalid, FeatdiscoError) as e:  # shown on the page, not dropped
            scans.append(ScanFailure(name=name, error=f"{type(e).__name__}: {e}"))
    return EvidenceOverview(run_key=run_key(manifest, len(pids)), quotes=counts, scans=scans)


def _rows_of(piece_ids: pa.ChunkedArray | pa.Array, pids: pa.Array) -> NDArray[np.int64]:
    """The pieces.parquet row of each piece id (-1 when it is not there)."""
    found = pc.index_in(piece_ids, value_set=pids)
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _quote_counts(feats: pa.Table) -> dict[str, int]:
    ver = feats.column("verified")
    quote = feats.column("quote")
    return {"features": feats.num_rows,
            "verified": int(pc.sum(pc.equal(ver, True)).as_py() or 0),
            "unverified": int(pc.sum(pc.equal(ver, False)).as_py() or 0),
            "empty": int(pc.sum(pc.equal(quote, "")).as_py() or 0),
            "none": int(quote.null_count)}


def _evidence_row(r: _QuoteRow) -> list[Any]:
    return [r["text"], r["quote"], r["quote_start"], r["quote_end"], r["verified"]]


def _write_transcript_quotes(run: Path, writer: ShardWriter, order: PieceOrder, feats: pa.Table,
                             pos: NDArray[np.int64]) -> None:
    meta = pq.read_table(run / "pieces.parquet", columns=["turn", "kind"])
    keys = [f"{t}:{k}" for t, k in zip(meta.column("turn").to_pylist(), meta.column("kind").to_pylist(), strict=True)]
    keep = np.flatnonzero(np.asarray(pc.is_valid(feats.column("quote")).to_numpy(zero_copy_only=False)) & (pos >= 0))
    tidx = order.tidx[pos[keep]]
    shard_of = tidx // TRANSCRIPTS_PER_SHARD
    perm = np.argsort(shard_of, kind="stable")
    keep, tidx, shard_of = keep[perm], tidx[perm], shard_of[perm]
    bounds = np.flatnonzero(np.diff(shard_of)) + 1
    # one take into shard order, then a slice per shard (a take per shard is quadratic-ish)
    cols = feats.select(["text", "quote", "quote_start", "quote_end", "verified"]).take(pa.array(keep))
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(keep)], strict=True):
        if a == b:
            continue
        rows = cast(list[_QuoteRow], cols.slice(a, b - a).to_pylist())
        value: dict[int, dict[str, list[list[Any]]]] = {}
        for r, t, p in zip(rows, tidx[a:b].tolist(), pos[keep[a:b]].tolist(), strict=True):
            value.setdefault(t, {}).setdefault(keys[p], []).append(_evidence_row(r))
        s = int(shard_of[a])
        writer.write(f"q/{s}.js", f"q/{s}", value)


def _write_cluster_members(run: Path, writer: ShardWriter, order: PieceOrder, clusters: pa.Table,
                           feats: pa.Table, pos: NDArray[np.int64], quoted: bool, seed: int) -> None:
    """A random sample of each cluster's member pieces, with their quotes for the cluster."""
    cid = np.asarray(feats.column("cluster_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    ok = (cid >= 0) & (pos >= 0)
    n = max(len(order.tidx), 1)
    flat = np.unique(cid[ok] * n + pos[ok])  # distinct (cluster, piece row), as one int64 each
    pairs = np.stack([flat // n, flat % n], axis=1)
    n_members = np.bincount(pairs[:, 0], minlength=clusters.num_rows) if len(pairs) else np.zeros(0, np.int64)
    # a uniform sample per cluster: order each cluster's members by a seeded random key
    key = np.random.default_rng(seed).random(len(pairs))
    order_ = np.lexsort((key, pairs[:, 0]))
    pairs = pairs[order_]
    starts = np.r_[0, np.flatnonzero(np.diff(pairs[:, 0])) + 1] if len(pairs) else np.zeros(0, np.int64)
    rank = np.arange(len(pairs)) - np.repeat(starts, np.diff(np.r_[starts, len(pairs)]))
    chosen = pairs[rank < MEMBERS_SHOWN]
    chosen = chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))]
    texts = _texts(run, set(chosen[:, 1].tolist()))
    quotes: dict[tuple[int, int], list[list[Any]]] = {}
    if quoted:
        sel = np.flatnonzero(ok & np.isin(pos, chosen[:, 1]))
        rows = cast(list[_QuoteRow], feats.select(["text", "quote", "quote_start", "quote_end", "verified"])
                    .take(pa.array(sel)).to_pylist())
        for r, c, p in zip(rows, cid[sel].tolist(), pos[sel].tolist(), strict=True):
            if r["quote"] is not None:
                quotes.setdefault((c, p), []).append(_evidence_row(r))
    shown: dict[int, list[_Member]] = {}
    for c, p in chosen.tolist():
        q = quotes.get((c, p), [])
        first = next((e[2] for e in q if e[4] and e[2] is not None), None)
        info = texts[p]
        text, off = _window(info["text"] or "", first, MEMBER_WINDOW)
        shown.setdefault(c, []).append(_Member(pid=info["piece_id"], t=int(order.tidx[p]), kind=info["kind"],
                                               turn=info["turn"], model=info["model"], text=text, off=off,
                                               len=len(info["text"] or ""), q=q))
    by_shard: dict[int, dict[int, Any]] = {}
    for c in clusters.column("cluster_id").to_pylist():
        by_shard.setdefault(c // CLUSTERS_PER_SHARD, {})[c] = {
            "members": int(n_members[c]) if c < len(n_members) else 0, "shown": shown.get(c, [])}
    for s, value in by_shard.items():
        writer.write(f"cq/{s}.js", f"cq/{s}", value)


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _write_scan(run: RunDir, writer: ShardWriter, order: PieceOrder, name: str, pids: pa.Array,
                seed: int) -> ScanLine:
    """``sc/<name>.js``; returns the scan's line for the overview. Counted in Arrow; only
    the sampled rows become Python objects."""
    table = pq.read_table(run.file(f"scan_{name}.parquet"))
    pred = scan_predictions(run, name)
    info = dict((run.manifest.get("scans") or {}).get(name) or {})
    pos = _rows_of(table.column("piece_id"), pids)
    ok = np.asarray(pc.equal(table.column("status"), "ok").to_numpy(zero_copy_only=False), dtype=bool) & (pos >= 0)
    positive = np.array([pred.get(p) is True for p in table.column("piece_id").to_pylist()], dtype=bool)
    hits, others = np.flatnonzero(ok & positive), np.flatnonzero(ok & ~positive)
    rng = np.random.default_rng(seed)
    shown_hits = np.sort(rng.choice(hits, min(HITS_SHOWN, len(hits)), replace=False))
    shown_others = np.sort(rng.choice(others, min(OTHERS_SHOWN, len(others)), replace=False))
    picked = np.r_[shown_hits, shown_others].astype(np.int64)
    texts = _texts(run.path, set(pos[picked].tolist()))
    items: list[_ScanItem] = []
    for i, r in zip(picked.tolist(), table.take(pa.array(picked)).to_pylist(), strict=True):
        p = int(pos[i])
        span = r.get("span")
        start = span["start"] if span and r.get("verified") else None
        full = texts[p]["text"] or ""
        text, off = _window(full, start, SCAN_WINDOW)
        # a verified quote is shown in the piece's own words (its span), not the LLM's copy,
        # which the check let differ in case, spacing and quote marks
        quote = full[span["start"]:span["end"]] if start is not None else r.get("quote")
        items.append(_ScanItem(pid=r["piece_id"], t=int(order.tidx[p]), kind=r["kind"],
                               turn=texts[p]["turn"], model=texts[p]["model"],
                               answer=r["answer"], positive=bool(positive[i]), quote=quote,
                               start=start, end=span["end"] if start is not None else None,
                               verified=r.get("verified"), reason=r.get("reason"), text=text, off=off,
                               len=len(texts[p]["text"] or "")))
    by = []
    for path in sorted(run.path.glob(f"scan_{name}_by_*.parquet")):
        g = pq.read_table(path).to_pylist()
        by.append({"column": path.stem.removeprefix(f"scan_{name}_by_"),
                   "rows": [{k: _clean(v) for k, v in r.items()} for r in g]})
    ver = np.asarray(pc.fill_null(pc.cast(table.column("verified"), pa.int8()), -1).to_numpy(zero_copy_only=False))[ok]
    n, n_pos = int(ok.sum()), len(hits)
    lo, hi = wilson_interval(n_pos, n)
    from featdisco.analysis.provenance import stale_files

    old = stale_files(run.path).get(f"scan_{name}.parquet")  # a cluster's scan after the clusters changed
    summary = ScanLine(name=name, question=info.get("question"), answer=info.get("answer"),
                       scanned=table.num_rows, n=n, positives=n_pos,
                       rate=n_pos / n if n else None, ci_low=float(lo), ci_high=float(hi),
                       failed=int(np.sum(np.asarray(pc.not_equal(table.column("status"), "ok").to_numpy(
                           zero_copy_only=False), dtype=bool))),
                       quotes=int((ver >= 0).sum()), unverified=int((ver == 0).sum()),
                       stale=old is not None, refresh=(old.get("command") if old else None))
    writer.write(f"sc/{name}.js", f"sc/{name}", {**summary, "by": by, "items": items,
                                                 "hits_shown": len(shown_hits), "others_shown": len(shown_others),
                                                 "others": len(others)})
    return summary
