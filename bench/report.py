"""Benchmark ``featdisco report`` on a synthetic large run: build time, peak memory, files
and bytes written, and what the first view loads (index.html + app.js + app.css +
data/overview.js) — the figure that decides whether a 20k-cluster run "opens quickly".

The run is written straight to Parquet (no LLM): ``--pieces`` pieces in transcripts of
user / thought / response turns with ~60-word texts, 8 features each drawn with Zipf-like
repetition from a vocabulary of distinct feature strings, ``--clusters`` clusters split
across the three kinds, 384-d random centroids. It then builds the report in a child
process (so the peak RSS is the build's own) and, with ``--open``, times the first view and a
cluster page in headless chromium from file://.

    python bench/report.py [--pieces 1000000] [--clusters 20000] [--open] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("user", "thought", "response")
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zu", "po") for b in
         ("ran", "tel", "mon", "dis", "fer", "gal", "hup", "jor", "lix", "qua", "bem", "cot", "dun", "fyr")] + [
    "the", "model", "answer", "question", "code", "reason", "step", "tool", "user", "policy", "token", "budget"]


def make_run(root: Path, n_pieces: int, n_clusters: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per_t = 3
    n_t = n_pieces // per_t
    n_pieces = n_t * per_t
    tids = np.repeat(np.arange(n_t), per_t)
    kind_idx = np.tile(np.arange(per_t), n_t)
    kinds = np.asarray(KINDS)[kind_idx]
    words = np.asarray(WORDS)
    vocab_words = rng.integers(0, len(words), size=(n_t * per_t, 60))
    # 60-word texts built with NumPy string joins, a chunk at a time
    texts: list[str] = []
    for s in range(0, len(vocab_words), 100_000):
        block = words[vocab_words[s:s + 100_000]]
        texts.extend(" ".join(r) for r in block.tolist())
    tid_str = [f"t{t:07d}" for t in range(n_t)]
    piece_ids = [f"{tid_str[t]}:{k}:{KINDS[k]}" for t, k in zip(tids.tolist(), kind_idx.tolist(), strict=True)]
    pieces = pa.table({
        "piece_id": piece_ids, "transcript_id": pa.array(tid_str).take(pa.array(tids)),
        "turn": pa.array(np.minimum(kind_idx, 1)), "kind": kinds, "text": texts,
        "model": pa.array(["model-a", "model-b"]).take(pa.array(tids % 2)),
        "source": ["synthetic"] * len(texts), "record": pa.array([f"line {t + 1}" for t in range(n_t)]).take(pa.array(tids)),
        "format": ["synthetic"] * len(texts), "truncated": np.zeros(len(texts), bool),
        "system": pa.nulls(len(texts), pa.string()), "metadata": ['{"split":"bench"}'] * len(texts)})
    pq.write_table(pieces, root / "pieces.parquet", compression="zstd")
    del texts, piece_ids

    per_piece = 8
    per_kind = n_clusters // 3
    n_strings = max(n_clusters * 10, 1000)
    # each distinct feature string belongs to one kind and one cluster of that kind
    string_kind = np.arange(n_strings) % 3
    string_cluster = string_kind * per_kind + rng.integers(0, per_kind, n_strings)
    ranks = (rng.pareto(1.1, size=(n_pieces, per_piece)) * 50).astype(np.int64)
    sid = (ranks // 3 * 3 + kind_idx[:, None]) % (n_strings - n_strings % 3)  # same kind as the piece
    sid = sid.ravel()
    strings = pa.array([f"Feature {WORDS[i % len(WORDS)]} {i}" for i in range(n_strings)])
    fpiece = np.repeat(np.arange(n_pieces), per_piece)
    features = pa.table({
        "feature_id": np.arange(len(sid)), "piece_id": pa.array(pieces.column("piece_id").combine_chunks()).take(pa.array(fpiece)),
        "transcript_id": pieces.column("transcript_id").take(pa.array(fpiece)),
        "kind": pa.array(kinds).take(pa.array(fpiece)), "text": strings.take(pa.array(sid))})
    pq.write_table(features, root / "features.parquet", compression="zstd")
    cid = string_cluster[sid]
    pq.write_table(pa.table({"feature_id": np.arange(len(sid)), "kind": features.column("kind"),
                             "cluster_id": cid, "similarity": rng.random(len(sid)).astype(np.float32)}),
                   root / "assignments.parquet", compression="zstd")
    size = np.bincount(cid, minlength=per_kind * 3)
    ids = np.arange(per_kind * 3)
    pq.write_table(pa.table({
        "cluster_id": ids, "kind": np.asarray(KINDS)[ids // per_kind], "cluster": ids % per_kind,
        "size": size, "distinct": np.maximum(1, size // 20), "small": size < 3, "pieces": size, "transcripts": size,
        "label": [f"Synthetic behaviour {WORDS[i % len(WORDS)]} {i}" for i in ids],
        "description": [f"Pieces where the model does synthetic thing number {i}." for i in ids],
        "interest": rng.integers(1, 101, len(ids)), "interest_reason": ["Synthetic."] * len(ids),
        "private": rng.random(len(ids)) < 0.01, "examples": [[] for _ in ids]}), root / "clusters.parquet")
    for k, kind in enumerate(KINDS):
        np.save(root / f"centroids_{kind}.npy", rng.standard_normal((per_kind, 384)).astype(np.float32) + k)
    (root / "manifest.json").write_text(json.dumps({
        "config": {"llm": "synthetic", "model": "none", "n_clusters": n_clusters}, "stages": {},
        "llm_totals": {"calls": 0}, "created": "bench"}))


def child(run: str) -> None:
    from featdisco.report import build_report

    t0 = time.perf_counter()
    stats = build_report(run)
    out = {"seconds": round(time.perf_counter() - t0, 1), "steps": stats.seconds, "files": stats.files,
           "mb": round(stats.bytes / 1e6, 1), "first_view_kb": round(stats.first_view_bytes / 1e3, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(out))


def open_times(report: Path, cluster: int, transcript: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    out: dict[str, float] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = b.new_page()
        for name, h, sel in (("overview", "#/", "h1:has-text('Run overview')"),
                             ("cluster list", "#/clusters/thought", "table.clusters tbody tr"),
                             ("cluster page", f"#/c/{cluster}", "h2:has-text('Example pieces')"),
                             ("transcript", f"#/t/{transcript}", ".turn"),
                             ("search", "#/search?q=karan", "h2:has-text('Features')")):
            t0 = time.perf_counter()
            page.goto((report / "index.html").as_uri() + h)
            page.wait_for_selector(sel, timeout=60_000)
            out[name] = round(time.perf_counter() - t0, 2)
            page.goto("about:blank")
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=1_000_000)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--open", action="store_true", help="also time views in headless chromium")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    tmp = tempfile.TemporaryDirectory() if a.keep is None else None
    root = a.keep or Path(tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_run(root, a.pieces, a.clusters)
    print(f"synthetic run: {a.pieces:,} pieces, {a.clusters:,} clusters, written in {time.perf_counter() - t0:.0f}s")
    res = subprocess.run([sys.executable, __file__, "--child", str(root)], capture_output=True, text=True, check=True)
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"report built in {stats['seconds']}s ({stats['steps']}); peak RSS {stats['peak_rss_mb']} MB")
    print(f"{stats['files']:,} files, {stats['mb']} MB in all; first view loads {stats['first_view_kb']} kB")
    if a.open:
        print("time to show each view from file:// (s):", open_times(root / "report", a.clusters // 2, a.pieces // 6))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
