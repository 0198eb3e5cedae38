"""Arrow-side preparation of a run for the report: piece order, features per piece, and
the transcript and cluster shards.

Everything large stays columnar (Arrow buffers, NumPy arrays); rows become Python objects
only one shard at a time, and piece text is streamed from Parquet in record batches, so a
run of a million pieces is built without holding its text in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featdisco.report.shards import ShardWriter

TRANSCRIPTS_PER_SHARD = 32
CLUSTERS_PER_SHARD = 128
DIRECTORY_PER_SHARD = 1024  # transcripts per ti/ shard: id, model, opening words
MEMBER_SAMPLE = 40  # distinct member features shown per cluster
EXAMPLE_PIECES = 6  # example pieces per cluster
EXCERPT_CHARS = 700  # of an example piece's text on a cluster page
_PIECE_COLS = ["transcript_id", "turn", "kind", "text", "model", "source", "record", "metadata",
               "system", "truncated", "tool_output"]
BATCH = 8192


@dataclass(slots=True)
class PieceOrder:
    """Where each piece (row of pieces.parquet) goes: its transcript's index, transcripts
    numbered in order of first appearance."""

    tidx: np.ndarray  # int64 per piece row
    transcript_ids: pa.Array  # string per transcript index
    contiguous: bool  # every transcript's pieces are adjacent rows (split writes them so)


def piece_order(run_dir: Path) -> PieceOrder:
    ids = pq.read_table(run_dir / "pieces.parquet", columns=["transcript_id"]).column(0)
    enc = pc.dictionary_encode(ids).combine_chunks()
    tidx = np.asarray(enc.indices, dtype=np.int64)
    contiguous = bool(np.all(np.diff(tidx) >= 0)) if len(tidx) else True
    return PieceOrder(tidx, enc.dictionary, contiguous)


def feature_table(run_dir: Path) -> pa.Table:
    """One row per feature: piece row ``pos``, ``text``, ``cluster_id``, ``similarity``,
    sorted by ``pos`` so a range of pieces has a contiguous range of features."""
    feats = pq.read_table(run_dir / "features.parquet", columns=["piece_id", "text"])
    assign = pq.read_table(run_dir / "assignments.parquet", columns=["cluster_id", "similarity"])
    feats = feats.append_column("cluster_id", assign.column("cluster_id")) \
        .append_column("similarity", assign.column("similarity"))
    pids = pq.read_table(run_dir / "pieces.parquet", columns=["piece_id"]).column(0)
    pos = pa.table({"piece_id": pids, "pos": pa.array(np.arange(len(pids), dtype=np.int64))})
    joined = feats.join(pos, "piece_id", join_type="inner").drop_columns(["piece_id"])
    return joined.sort_by([("pos", "ascending"), ("cluster_id", "ascending")]).combine_chunks()


def _piece_batches(run_dir: Path, order: PieceOrder) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Pieces in transcript order as (first row position, batch): streamed when the file
    keeps transcripts together, else sorted in memory (a file written by hand)."""
    pf = pq.ParquetFile(run_dir / "pieces.parquet")
    cols = [c for c in _PIECE_COLS if c in pf.schema_arrow.names]
    if order.contiguous:
        start = 0
        for batch in pf.iter_batches(batch_size=BATCH, columns=cols):
            yield start, batch
            start += batch.num_rows
        return
    table = pf.read(columns=cols)
    perm = np.argsort(order.tidx, kind="stable")
    table = table.take(pa.array(perm)).append_column("__pos", pa.array(perm))
    for batch in table.to_batches(max_chunksize=BATCH):
        yield -1, batch


class _Piece(TypedDict):
    """A piece in a transcript shard, with its features as [text, cluster id] pairs."""

    turn: int
    kind: str
    text: str
    trunc: bool
    tools: Any  # the tool-output column as stored, when the run has one
    f: list[list[Any]]


class _Transcript(TypedDict):
    """A transcript in a ``t/<n>.js`` shard."""

    i: int  # its index in the report's order
    id: str
    model: str | None
    source: str | None
    record: Any
    meta: Any
    system: str | None
    pieces: list[_Piece]


class _Example(TypedDict, total=False):
    """A piece shown on a cluster page: its excerpt (when found), transcript and matches."""

    kind: str
    turn: int
    model: str | None
    text: str
    cut: bool
    t: int
    match: list[str]


def write_transcripts(run_dir: Path, writer: ShardWriter, order: PieceOrder, feats: pa.Table) -> int:
    """Write ``t/<n>.js`` shards of TRANSCRIPTS_PER_SHARD transcripts each, with every
    piece's features and clusters; returns the number of shards."""
    fpos = np.asarray(feats.column("pos"))
    ftext = feats.column("text")
    fcid = feats.column("cluster_id")
    current: dict[int, _Transcript] = {}
    directory: list[list[Any]] = []
    shard = 0
    shards = 0

    def flush(upto: int | None) -> None:
        nonlocal shards
        done = sorted(t for t in current if upto is None or t // TRANSCRIPTS_PER_SHARD < upto)
        by_shard: dict[int, list[_Transcript]] = {}
        for t in done:
            by_shard.setdefault(t // TRANSCRIPTS_PER_SHARD, []).append(current.pop(t))
        for s, rows in by_shard.items():
            for r in rows:
                first = next((p["text"] for p in r["pieces"] if p["kind"] == "user"), None) \
                    or (r["pieces"][0]["text"] if r["pieces"] else "")
                directory.append([r["i"], r["id"], r["model"], (first or "")[:160]])
            writer.write(f"t/{s}.js", f"t/{s}", {"first": s * TRANSCRIPTS_PER_SHARD, "rows": rows})
            shards += 1

    for start, batch in _piece_batches(run_dir, order):
        cols = batch.to_pydict()
        positions = cols.pop("__pos", None) or list(range(start, start + batch.num_rows))
        lo, hi = np.searchsorted(fpos, [min(positions), max(positions) + 1])
        fp = fpos[lo:hi].tolist()
        ft = ftext.slice(lo, hi - lo).to_pylist()
        fc = fcid.slice(lo, hi - lo).to_pylist()
        per_piece: dict[int, list[list[Any]]] = {}
        for p, text, cid in zip(fp, ft, fc, strict=True):
            per_piece.setdefault(p, []).append([text, cid])
        for i, pos in enumerate(positions):
            t = int(order.tidx[pos])
            s = t // TRANSCRIPTS_PER_SHARD
            if order.contiguous and s > shard:
                flush(s)
                shard = s
            rec = current.get(t)
            if rec is None:
                rec = current[t] = _Transcript(i=t, id=cols["transcript_id"][i], model=cols["model"][i],
                                               source=cols.get("source", [None])[i] if "source" in cols else None,
                                               record=cols["record"][i] if "record" in cols else None,
                                               meta=cols["metadata"][i] if "metadata" in cols else None,
                                               system=cols["system"][i] if "system" in cols else None,
                                               pieces=[])
            rec["pieces"].append(_Piece(turn=cols["turn"][i], kind=cols["kind"][i], text=cols["text"][i],
                                        trunc=bool(cols["truncated"][i]) if "truncated" in cols else False,
                                        tools=cols["tool_output"][i] if "tool_output" in cols else None,
                                        f=per_piece.get(pos, [])))
        if not order.contiguous:
            continue
    flush(None)
    directory.sort(key=lambda row: row[0])
    for s0 in range(0, len(directory), DIRECTORY_PER_SHARD):
        n = directory[s0][0] // DIRECTORY_PER_SHARD
        chunk = [r for r in directory[s0:s0 + DIRECTORY_PER_SHARD] if r[0] // DIRECTORY_PER_SHARD == n]
        writer.write(f"ti/{n}.js", f"ti/{n}", {"first": n * DIRECTORY_PER_SHARD, "rows": [r[1:] for r in chunk]})
    return shards


def _top_per_group(groups: np.ndarray, n: int) -> np.ndarray:
    """Mask keeping the first ``n`` rows of each run of equal values in sorted ``groups``."""
    if len(groups) == 0:
        return np.zeros(0, dtype=bool)
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return (np.arange(len(groups)) - run_start) < n


def feature_counts(feats: pa.Table) -> pa.Table:
    """Distinct (cluster_id, text) with their count ``pos_count``, by cluster, most common first."""
    return feats.group_by(["cluster_id", "text"]).aggregate([("pos", "count")]) \
        .sort_by([("cluster_id", "ascending"), ("pos_count", "descending"), ("text", "ascending")])


def cluster_members(counts: pa.Table) -> pa.Table:
    """The MEMBER_SAMPLE most frequent distinct features of each cluster, with counts."""
    keep = _top_per_group(np.asarray(counts.column("cluster_id")), MEMBER_SAMPLE)
    return counts.filter(pa.array(keep))


def cluster_examples(feats: pa.Table) -> pa.Table:
    """EXAMPLE_PIECES pieces per cluster: those whose features sit closest to the centroid."""
    best = feats.group_by(["cluster_id", "pos"]).aggregate([("similarity", "max")]) \
        .sort_by([("cluster_id", "ascending"), ("similarity_max", "descending"), ("pos", "ascending")])
    keep = _top_per_group(np.asarray(best.column("cluster_id")), EXAMPLE_PIECES)
    return best.filter(pa.array(keep))


class PieceExcerpt(TypedDict):
    """A piece shown as an example on a cluster page: where it is and how it starts."""

    kind: str
    turn: int
    model: str | None
    text: str  # the first EXCERPT_CHARS characters
    cut: bool  # the text goes on


def piece_excerpts(run_dir: Path, wanted: np.ndarray) -> dict[int, PieceExcerpt]:
    """Kind, turn, model and the first EXCERPT_CHARS of text of the wanted piece rows,
    read in one streaming pass."""
    wanted = np.unique(wanted)
    out: dict[int, PieceExcerpt] = {}
    start = 0
    pf = pq.ParquetFile(run_dir / "pieces.parquet")
    for batch in pf.iter_batches(batch_size=BATCH, columns=["kind", "turn", "model", "text"]):
        rows = np.arange(start, start + batch.num_rows)
        hit = rows[np.isin(rows, wanted, assume_unique=True)]
        if len(hit):
            sub = batch.take(pa.array(hit - start)).to_pydict()
            for j, pos in enumerate(hit.tolist()):
                text = sub["text"][j] or ""
                out[pos] = {"kind": sub["kind"][j], "turn": sub["turn"][j], "model": sub["model"][j],
                            "text": text[:EXCERPT_CHARS], "cut": len(text) > EXCERPT_CHARS}
        start += batch.num_rows
    return out


def write_clusters(run_dir: Path, writer: ShardWriter, clusters: pa.Table, order: PieceOrder,
                   feats: pa.Table, counts: pa.Table) -> int:
    """Write ``c/<n>.js`` shards: description, rating reason, member features, example
    pieces with their transcript index; returns the number of shards."""
    members = cluster_members(counts)
    examples = cluster_examples(feats)
    ex_pos = np.asarray(examples.column("pos"))
    excerpts = piece_excerpts(run_dir, ex_pos)
    fpos = np.asarray(feats.column("pos"))
    m_cid = np.asarray(members.column("cluster_id"))
    e_cid = np.asarray(examples.column("cluster_id"))
    rows = sorted(clusters.to_pylist(), key=lambda r: r["cluster_id"])
    shards = 0
    for shard, group in itertools.groupby(rows, key=lambda r: r["cluster_id"] // CLUSTERS_PER_SHARD):
        chunk = list(group)
        lo_id, hi_id = chunk[0]["cluster_id"], chunk[-1]["cluster_id"] + 1
        ms, me = np.searchsorted(m_cid, [lo_id, hi_id])
        es, ee = np.searchsorted(e_cid, [lo_id, hi_id])
        mem: dict[int, list[list[Any]]] = {}
        for cid, text, n in zip(m_cid[ms:me].tolist(), members.column("text").slice(ms, me - ms).to_pylist(),
                                members.column("pos_count").slice(ms, me - ms).to_pylist(), strict=True):
            mem.setdefault(cid, []).append([text, n])
        exs: dict[int, list[_Example]] = {}
        for cid, pos in zip(e_cid[es:ee].tolist(), ex_pos[es:ee].tolist(), strict=True):
            lo, hi = np.searchsorted(fpos, [pos, pos + 1])
            sl = feats.slice(lo, hi - lo)
            matched = [t for t, c in zip(sl.column("text").to_pylist(), sl.column("cluster_id").to_pylist(),
                                         strict=True) if c == cid]
            ex = _Example(**excerpts[pos]) if pos in excerpts else _Example()
            ex["t"], ex["match"] = int(order.tidx[pos]), matched[:4]
            exs.setdefault(cid, []).append(ex)
        out = []
        for r in chunk:
            cid = r["cluster_id"]
            out.append({"id": cid, "description": r.get("description"),
                        "reason": r.get("interest_reason"), "examples": r.get("examples") or [],
                        "members": mem.get(cid, []), "pieces": exs.get(cid, [])})
        writer.write(f"c/{shard}.js", f"c/{shard}", out)
        shards += 1
    return shards
