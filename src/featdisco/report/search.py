"""The search index: token → matching cluster labels, features and transcripts, sharded by
the token's first two characters so that a query loads one small file per word.

Tokens are lower-cased runs of letters and digits (the same rule as ``tokens()`` in app.js).
Postings are capped (most frequent features first, first transcripts first), which keeps
every shard small at a million pieces; the page says when a list was cut.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featdisco.report.shards import ShardWriter, token_key

FEATURES_PER_TOKEN = 25
TRANSCRIPTS_PER_TOKEN = 60
CLUSTERS_PER_TOKEN = 200
_SPLIT = r"[^\p{L}\p{N}]+"
_PY_SPLIT = re.compile(r"[\W_]+")
_MIN_LEN, _MAX_LEN = 2, 30


def _tokens_table(text: pa.Array, owner: pa.Array) -> pa.Table:
    """(token, owner) pairs, distinct, for every token of every text."""
    parts = pc.split_pattern_regex(pc.utf8_lower(pc.fill_null(text, "")), _SPLIT)
    flat = pc.list_flatten(parts)
    parent = pc.list_parent_indices(parts)
    t = pa.table({"token": flat, "owner": pc.take(owner, parent)})
    n = pc.utf8_length(t.column("token"))
    t = t.filter(pc.and_(pc.greater_equal(n, _MIN_LEN), pc.less_equal(n, _MAX_LEN)))
    return t.group_by(["token", "owner"]).aggregate([])


def _cap(table: pa.Table, n: int, order: list[tuple[str, str]]) -> pa.Table:
    table = table.sort_by(order)
    tok = table.column("token").combine_chunks()
    codes = np.asarray(pc.dictionary_encode(tok).indices)
    starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1] if len(codes) else np.zeros(0, int)
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(codes)])) if len(codes) else starts
    return table.filter(pa.array((np.arange(len(codes)) - run_start) < n))


def transcript_postings(run_dir: Path, tidx: np.ndarray, batch_size: int = 65_536) -> pa.Table:
    """(token, owner=transcript index) for piece text, at most TRANSCRIPTS_PER_TOKEN per
    token, streamed over the pieces in batches and trimmed as it goes."""
    pf = pq.ParquetFile(run_dir / "pieces.parquet")
    kept: list[pa.Table] = []
    start = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=["text"]):
        owner = pa.array(tidx[start:start + batch.num_rows])
        start += batch.num_rows
        kept.append(_cap(_tokens_table(batch.column(0), owner), TRANSCRIPTS_PER_TOKEN,
                         [("token", "ascending"), ("owner", "ascending")]))
        if len(kept) >= 8:
            kept = [_cap(pa.concat_tables(kept).group_by(["token", "owner"]).aggregate([]),
                         TRANSCRIPTS_PER_TOKEN, [("token", "ascending"), ("owner", "ascending")])]
    if not kept:
        return pa.table({"token": pa.array([], pa.string()), "owner": pa.array([], pa.int64())})
    return _cap(pa.concat_tables(kept).group_by(["token", "owner"]).aggregate([]),
                TRANSCRIPTS_PER_TOKEN, [("token", "ascending"), ("owner", "ascending")])


def feature_postings(members: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(token, owner=row) for distinct (cluster, feature) rows, most frequent first; and
    the rows themselves."""
    rows = members.select(["cluster_id", "text", "pos_count"])
    owner = pa.array(np.arange(rows.num_rows, dtype=np.int64))
    post = _tokens_table(rows.column("text"), owner)
    post = post.append_column("n", pc.take(rows.column("pos_count"), post.column("owner")))
    return _cap(post, FEATURES_PER_TOKEN, [("token", "ascending"), ("n", "descending")]), rows


def _py_tokens(text: str) -> set[str]:
    return {t for t in _PY_SPLIT.split(text.lower()) if _MIN_LEN <= len(t) <= _MAX_LEN}


def write_search(writer: ShardWriter, clusters: pa.Table, feature_counts: pa.Table,
                 transcripts: pa.Table) -> int:
    """Write ``s/<key>.js`` shards {token: {c: [cluster ids], f: [[feature, cluster, n]],
    t: [transcript indexes]}}; returns the number of shards."""
    index: dict[str, dict[str, dict[str, list[Any]]]] = defaultdict(dict)

    def entry(tok: str) -> dict[str, list[Any]]:
        shard = index[token_key(tok)]
        if tok not in shard:
            shard[tok] = {"c": [], "f": [], "t": []}
        return shard[tok]

    for cid, label, desc in zip(clusters.column("cluster_id").to_pylist(),
                                clusters.column("label").to_pylist(),
                                clusters.column("description").to_pylist(), strict=True):
        for tok in _py_tokens(f"{label or ''} {desc or ''}"):
            e = entry(tok)
            if len(e["c"]) < CLUSTERS_PER_TOKEN:
                e["c"].append(cid)
    post, rows = feature_postings(feature_counts)
    owners = post.column("owner")
    for tok, text, cid, n in zip(post.column("token").to_pylist(),
                                 pc.take(rows.column("text"), owners).to_pylist(),
                                 pc.take(rows.column("cluster_id"), owners).to_pylist(),
                                 pc.take(rows.column("pos_count"), owners).to_pylist(), strict=True):
        entry(tok)["f"].append([text, cid, n])
    for tok, t in zip(transcripts.column("token").to_pylist(), transcripts.column("owner").to_pylist(),
                      strict=True):
        entry(tok)["t"].append(t)
    for key, value in index.items():
        writer.write(f"s/{key}.js", f"s/{key}", value)
    return len(index)
