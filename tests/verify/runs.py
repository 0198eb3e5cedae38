"""A small real run (the report tests' hostile run: real pipeline, scripted fake rater over
HTTP, real minilm embedder) with evidence planted as featurize v2 and ``featdisco scan``
write it: quote columns in features.parquet, a scan table and its per-model prevalence.

Written directly (replacing the quotes the scripted featurize gives) so that the tests know
the exact mix of verified, invented and empty quotes and of scan answers, independently of
the featurize and scan code; ``test_real_scan.py`` covers the real scan's output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featdisco.analysis.stats import wilson_interval
from tests.report.runs import build_run

SCAN = "budget"
QUESTION = "Does the response mention a number?"
SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32())])
INVENTED = "a sentence the piece never said"


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def _quote(text: str, salt: str) -> tuple[int, int]:
    """A span of two to five words of ``text``, picked by a hash."""
    words = [(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", text)]
    if not words:
        return 0, 0
    i = _h(salt) % len(words)
    j = min(len(words), i + 2 + _h(salt + "n") % 4) - 1
    return words[i][0], words[j][1]


def plant_evidence(run: Path) -> dict[str, int]:
    """Quotes for every feature: most copied from the piece (verified, with their span),
    every 5th made up (unverified, no span), every 7th empty (a whole-piece property)."""
    pieces = pq.read_table(run / "pieces.parquet", columns=["piece_id", "text"])
    text_of = dict(zip(pieces.column("piece_id").to_pylist(), pieces.column("text").to_pylist(), strict=True))
    feats = pq.read_table(run / "features.parquet")
    quotes, starts, ends, verified = [], [], [], []
    for i, (pid, fid) in enumerate(zip(feats.column("piece_id").to_pylist(),
                                       feats.column("feature_id").to_pylist(), strict=True)):
        if i % 7 == 3:
            quotes.append(""), starts.append(None), ends.append(None), verified.append(None)
        elif i % 5 == 2:
            quotes.append(INVENTED), starts.append(None), ends.append(None), verified.append(False)
        else:
            a, b = _quote(text_of[pid], fid)
            quotes.append(text_of[pid][a:b]), starts.append(a), ends.append(b), verified.append(True)
    for name, values, typ in (("quote", quotes, pa.string()), ("quote_start", starts, pa.int32()),
                              ("quote_end", ends, pa.int32()), ("verified", verified, pa.bool_())):
        if name in feats.column_names:
            feats = feats.drop_columns([name])
        feats = feats.append_column(name, pa.array(values, typ))
    pq.write_table(feats, run / "features.parquet")
    return {"verified": verified.count(True), "unverified": verified.count(False), "empty": verified.count(None)}


def plant_scan(run: Path, name: str = SCAN) -> pa.Table:
    """``scan_<name>.parquet`` over the response pieces (answer true when the piece's text
    has a digit; the last piece's call failed; every 4th hit's quote is made up) and
    ``scan_<name>_by_model.parquet``, with the manifest entry scan writes."""
    pieces = pq.read_table(run / "pieces.parquet", columns=["piece_id", "transcript_id", "kind", "text", "model"])
    pieces = pieces.filter(pc.equal(pieces.column("kind"), "response"))
    rows: dict[str, list[object]] = {k: [] for k in ("piece_id", "transcript_id", "kind", "answer", "quote",
                                                       "span", "verified", "reason", "status")}
    n = pieces.num_rows
    hits = 0
    for i, r in enumerate(pieces.to_pylist()):
        text = r["text"] or ""
        digit = next((m for m in __import__("re").finditer(r"\d+", text)), None)
        rows["piece_id"].append(r["piece_id"])
        rows["transcript_id"].append(r["transcript_id"])
        rows["kind"].append("response")
        if i == n - 1:
            for k in ("answer", "quote", "span", "verified", "reason"):
                rows[k].append(None)
            rows["status"].append("failed: timeout")
            continue
        rows["status"].append("ok")
        rows["reason"].append("It names a number." if digit else "No number in it.")
        rows["answer"].append(digit is not None)
        if digit is None:
            rows["quote"].append(""), rows["span"].append(None), rows["verified"].append(None)
            continue
        hits += 1
        if hits % 4 == 0:
            rows["quote"].append(INVENTED), rows["span"].append(None), rows["verified"].append(False)
        else:
            a, b = max(0, digit.start() - 20), min(len(text), digit.end() + 20)
            rows["quote"].append(text[a:b]), rows["span"].append({"start": a, "end": b})
            rows["verified"].append(True)
    table = pa.table(rows, schema=pa.schema([
        ("piece_id", pa.string()), ("transcript_id", pa.string()), ("kind", pa.string()),
        ("answer", pa.bool_()), ("quote", pa.string()), ("span", SPAN), ("verified", pa.bool_()),
        ("reason", pa.string()), ("status", pa.string())]))
    pq.write_table(table, run / f"scan_{name}.parquet")
    ok = np.array([s == "ok" for s in rows["status"]])
    pos = np.array([a is True for a in rows["answer"]])
    models = np.array(pieces.column("model").to_pylist(), dtype=object)
    groups = sorted(set(models))
    ns = [int((ok & (models == g)).sum()) for g in groups]
    ps = [int((pos & (models == g)).sum()) for g in groups]
    lo, hi = wilson_interval(ps, ns)
    pq.write_table(pa.table({"group": groups, "n": ns, "positives": ps,
                             "rate": [p / m if m else None for p, m in zip(ps, ns, strict=True)],
                             "ci_low": lo, "ci_high": hi, "test": ["fisher"] * len(groups),
                             "p_value": [0.5] * len(groups), "q_value": [0.5] * len(groups)}),
                   run / f"scan_{name}_by_model.parquet")
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    manifest.setdefault("scans", {})[name] = {"question": QUESTION, "answer": "bool", "kinds": ["response"],
                                              "pieces": n, "n": int(ok.sum()), "positives": int(pos.sum()),
                                              "by": "model"}
    (run / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return table


def build_evidence_run(root: Path, shared_data: Path) -> Path:
    run = build_run(root, shared_data)
    plant_evidence(run)
    plant_scan(run)
    return run
