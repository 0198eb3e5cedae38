"""``featdisco validate``: how far the LLM's judgements agree with a person's.

A labels file has rows ``piece_id,target,label``: the person's verdict (true or false) on
whether the piece shows the target, where the target is a scan (``scan:<name>``: the LLM's
answer for that piece) or a cluster (``cluster:<kind>:<id>``: the piece is in it when any of
its features is). Each target gets the confusion counts of the LLM against the person, with
precision, recall and agreement as rates with Wilson intervals
(:func:`featdisco.analysis.stats.wilson_interval`), F1 and Cohen's κ. The report's labelling
mode exports exactly this file.

Columns are read by name from the header (``piece_id``, ``target``, ``label``, in any order,
other columns ignored); a file without a header is read as those three in that order. A
header without one of them is an error naming it. A malformed row (unknown target, a label
that is not true or false, a piece the target cannot hold, a row labelled twice) is an error
naming the file and line. A row that matches nothing in the run (its piece is not in the
run, or the scan did not ask about it: labels made on another run) is left out and reported,
by count and the first few file lines (``DataFrame.attrs["unmatched"]``); labels of pieces
the scan has no answer for (a failed call) are counted as ``unanswered``. None is dropped
silently.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.metrics import cohen_kappa_score

from featdisco.analysis.stats import wilson_interval
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir

HEADER = ("piece_id", "target", "label")
TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})
_SCAN = re.compile(r"scan:([A-Za-z0-9][A-Za-z0-9_-]{0,63})")
_CLUSTER = re.compile(r"cluster:(user|thought|response):(\d+)")
MAX_LISTED = 10  # bad rows named in one error message
COLUMNS = ["target", "n", "tp", "fp", "fn", "tn", "precision", "precision_low", "precision_high",
           "recall", "recall_low", "recall_high", "agreement", "agreement_low", "agreement_high",
           "f1", "kappa", "llm_positive_rate", "human_positive_rate", "unanswered"]


@dataclass(frozen=True, slots=True)
class Label:
    line: int  # 1-based line of the file, for error messages
    piece_id: str
    target: str
    truth: bool


def unmatched_note(path: str | Path, unmatched: list[tuple[int, str]]) -> str:
    """One line: how many rows matched nothing, with the first few by file and line."""
    n = len(unmatched)
    return (f"{path}: {n} row{'s' if n != 1 else ''} matched nothing in the run and "
            f"{'were' if n != 1 else 'was'} not counted: {_listing(unmatched)}")


def _listing(rows: list[tuple[int, str]]) -> str:
    more = f"; and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return "; ".join(f"line {line}: {why}" for line, why in sorted(rows)[:MAX_LISTED]) + more


def read_labels(path: str | Path) -> list[Label]:
    """The rows of a labels CSV (a ``piece_id,target,label`` header is optional); every
    malformed row is reported at once, by line, in one error."""
    labels, bad = _parse(Path(path))
    _raise(Path(path), bad)
    return labels


def _parse(path: Path) -> tuple[list[Label], list[tuple[int, str]]]:
    """The well-formed rows, and (line, problem) for each malformed one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FeatdiscoError(f"{path}: no such labels file") from None
    except UnicodeDecodeError as e:
        raise FeatdiscoError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    labels: list[Label] = []
    bad: list[tuple[int, str]] = []
    where = [0, 1, 2]  # the columns of piece_id, target and label
    width = 3
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row):
            continue  # a blank line holds no label
        cells = [c.strip() for c in row]
        if line == 1 and (header := _header(path, cells)) is not None:
            where, width = header, len(cells)
            continue
        if len(cells) != width:
            bad.append((line, f"expected {width} fields ({', '.join(HEADER) if width == 3 else 'as the header'}), "
                              f"got {len(cells)}"))
            continue
        pid, target, raw = (cells[i] for i in where)
        value = raw.lower()
        if not pid:
            bad.append((line, "empty piece_id"))
        elif value not in TRUE | FALSE:
            bad.append((line, f"label {raw!r} is not true or false"))
        else:
            labels.append(Label(line, pid, target, value in TRUE))
    if not labels and not bad:
        raise FeatdiscoError(f"{path}: no labels (expected rows piece_id,target,label)")
    return labels, bad


def _header(path: Path, cells: list[str]) -> list[int] | None:
    """The positions of piece_id, target and label when line 1 is a header, else None (a
    headerless file). A header is a first row naming any of the three; one that lacks a
    column is an error naming it."""
    names = [c.lower() for c in cells]
    if all(h in names for h in HEADER):
        return [names.index(h) for h in HEADER]
    if not set(names) & set(HEADER):
        return None  # a label row: the file has no header
    missing = [h for h in HEADER if h not in names]
    raise FeatdiscoError(f"{path}, line 1: the header has no column {', '.join(repr(m) for m in missing)} "
                         f"(it has {', '.join(repr(c) for c in cells)}); the columns are piece_id, target, label")


def _raise(path: Path, bad: list[tuple[int, str]]) -> None:
    if bad:
        raise FeatdiscoError(f"{path}: {len(bad)} bad row{'s' if len(bad) > 1 else ''}: {_listing(bad)}")


def scan_names(run: RunDir) -> list[str]:
    """The scans a run holds (``scan_<name>.parquet``, not the per-group tables)."""
    names = {p.stem.removeprefix("scan_") for p in run.path.glob("scan_*.parquet")}
    return sorted(n for n in names if not any(n.startswith(m + "_by_") for m in names if m != n))


def scan_predictions(run: RunDir, name: str) -> dict[str, bool | None]:
    """Each scanned piece's answer as positive or not; None where the scan has no answer
    (a failed call, or one the cost cap left unsent)."""
    table = pq.read_table(run.file(f"scan_{name}.parquet"), columns=["piece_id", "answer", "status"])
    ok = [s == "ok" for s in table.column("status").to_pylist()]
    answers = table.column("answer")
    if answers.type.equals("bool"):
        positive = [a is True for a in answers.to_pylist()]
    else:
        positive = _graded_positive(run, name, answers.to_pylist())
    return {pid: (p if k else None) for pid, p, k in
            zip(table.column("piece_id").to_pylist(), positive, ok, strict=True)}


def _graded_positive(run: RunDir, name: str, answers: list[Any]) -> list[bool]:
    """Positives of a scale or labels scan, by the rule ``scan`` counted them with (its
    ``--answer``, kept in the manifest): the upper half of the scale, or the first label."""
    from featdisco.evidence.scan import AnswerSpec

    spec = ((run.manifest.get("scans") or {}).get(name) or {}).get("answer")
    if not isinstance(spec, str):
        raise FeatdiscoError(f"{run.path}/manifest.json does not say how scan {name!r} answers (its --answer), "
                             "so its positives are unknown; rerun the scan (its calls come from the cache)")
    rule = AnswerSpec.parse(spec)
    return [a is not None and rule.positive(a) for a in answers]


def features_with_clusters(run: RunDir, columns: list[str]) -> pa.Table:
    """``columns`` of features.parquet with each feature's ``cluster_id`` (-1 when none),
    joined by feature_id when the assignments are not row-aligned with the features."""
    feats = run.read_table("features.parquet", columns=list(dict.fromkeys(["feature_id", *columns])))
    assign = run.read_table("assignments.parquet", columns=["feature_id", "cluster_id"])
    if feats.column("feature_id").equals(assign.column("feature_id")):
        cids = assign.column("cluster_id")
    else:
        feats = feats.join(assign, "feature_id", join_type="left outer")
        cids = feats.column("cluster_id")
        feats = feats.drop_columns(["cluster_id"])
    return feats.append_column("cluster_id", pc.fill_null(cids, -1))


def cluster_memberships(run: RunDir, piece_ids: Iterable[str]) -> set[tuple[int, str]]:
    """(cluster_id, piece_id) for every cluster each of ``piece_ids`` is in (any of its
    features is assigned to it), read in one pass over the features."""
    wanted = pa.array(sorted(set(piece_ids)), pa.string())
    feats = features_with_clusters(run, ["piece_id"])
    feats = feats.filter(pc.is_in(feats.column("piece_id"), value_set=wanted))
    return set(zip(feats.column("cluster_id").to_pylist(), feats.column("piece_id").to_pylist(), strict=True))


def confusion(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Counts and agreement figures of predictions ``pred`` against the person's ``truth``."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
    n = tp + fp + fn + tn
    lo, hi = wilson_interval([tp, tp, tp + tn], [tp + fp, tp + fn, n])
    nan = float("nan")
    po = (tp + tn) / n if n else nan
    # Cohen's kappa: agreement beyond what the two raters' marginal rates give by chance;
    # undefined when chance agreement is already perfect (both say the same single class).
    one_class = np.unique(np.concatenate([pred, truth])).size < 2
    kappa = nan if one_class else float(cohen_kappa_score(truth, pred))
    return {
        "n": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "precision_low": float(lo[0]), "precision_high": float(hi[0]),
        "recall": tp / (tp + fn) if tp + fn else nan,
        "recall_low": float(lo[1]), "recall_high": float(hi[1]),
        "agreement": po, "agreement_low": float(lo[2]), "agreement_high": float(hi[2]),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
        "kappa": kappa,
        "llm_positive_rate": (tp + fp) / n if n else nan,
        "human_positive_rate": (tp + fn) / n if n else nan,
    }


def validate(run_dir: str | Path, labels_path: str | Path, *, write: bool = True) -> pd.DataFrame:
    """One row per target of the labels file (in order of first appearance), with
    :data:`COLUMNS`; written to ``analysis_validation.parquet`` unless ``write`` is false."""
    run = RunDir(run_dir)
    labels_path = Path(labels_path)
    labels, bad = _parse(labels_path)
    pieces = run.read_table("pieces.parquet", columns=["piece_id", "kind"])
    kind_of = dict(zip(pieces.column("piece_id").to_pylist(), pieces.column("kind").to_pylist(), strict=True))
    cluster_kind: dict[int, str] = {}
    retired: dict[int, list[int]] = {}
    if any(lab.target.startswith("cluster:") for lab in labels):  # a transform's: the fitted run's clusters
        from featdisco.analysis.activations import cluster_table_source
        from featdisco.cluster_ids import retired_into

        source = cluster_table_source(run)
        clusters = pq.read_table(source, columns=["cluster_id", "kind"])
        cluster_kind = dict(zip(clusters.column("cluster_id").to_pylist(), clusters.column("kind").to_pylist(),
                                strict=True))
        # a label file written before an edit or recluster names ids that have since retired
        retired = retired_into(source.parent)
    scans = scan_names(run)
    by_target: dict[str, list[Label]] = {}
    unmatched: list[tuple[int, str]] = []
    for lab in labels:
        if lab.piece_id not in kind_of:
            unmatched.append((lab.line, f"unknown piece {lab.piece_id!r} (not in {run.file('pieces.parquet')})"))
            continue
        problem = _target_problem(lab, kind_of[lab.piece_id], scans, cluster_kind, retired)
        if problem:
            bad.append((lab.line, problem))
            continue
        by_target.setdefault(lab.target, []).append(lab)
    seen: dict[tuple[str, str], int] = {}
    for lab in labels:
        first = seen.setdefault((lab.piece_id, lab.target), lab.line)
        if first != lab.line:
            bad.append((lab.line, f"piece {lab.piece_id!r} is labelled for {lab.target} again "
                                  f"(first on line {first})"))
    predictions: dict[str, dict[str, bool | None]] = {}
    for target, rows in by_target.items():
        if target.startswith("scan:"):
            predictions[target] = scan_predictions(run, target.removeprefix("scan:"))
            asked = [lab for lab in rows if lab.piece_id in predictions[target]]
            unmatched += [(lab.line, f"piece {lab.piece_id!r} was not scanned by {target}")
                          for lab in rows if lab.piece_id not in predictions[target]]
            by_target[target] = asked
    _raise(labels_path, bad)
    by_target = {t: rows for t, rows in by_target.items() if rows}
    if not by_target:
        raise FeatdiscoError(f"{labels_path}: no row matched the run {run.path}: {_listing(unmatched)}")
    labelled = [lab.piece_id for t, rows in by_target.items() if t.startswith("cluster:") for lab in rows]
    memberships = cluster_memberships(run, labelled) if labelled else set()
    out = []
    for target, rows in by_target.items():
        if target.startswith("scan:"):
            got = [predictions[target][lab.piece_id] for lab in rows]
        else:
            cid = int(target.rsplit(":", 1)[1])
            got = [(cid, lab.piece_id) in memberships for lab in rows]
        answered = [g is not None for g in got]
        pred = np.array([bool(g) for g, a in zip(got, answered, strict=True) if a], dtype=bool)
        truth = np.array([lab.truth for lab, a in zip(rows, answered, strict=True) if a], dtype=bool)
        out.append({"target": target, **confusion(pred, truth), "unanswered": answered.count(False)})
    df = pd.DataFrame(out, columns=COLUMNS)
    df.attrs["unmatched"] = sorted(unmatched)
    if write:
        from featdisco.analysis.activations import write_analysis

        # one result per label file: validating against another file keeps this one, even when
        # both are called labels.csv (one per annotator, in their own folders)
        write_analysis(run.path, validation_name(run, labels_path), df,
                       command="validate", args={"_labels": str(labels_path.resolve())})
    return df


def validation_name(run: RunDir, labels_path: Path) -> str:
    """``validation_<file name>``, unless the run holds the validation of another file of that
    name (another folder's labels.csv): then with a digest of this file's full path."""
    import shlex

    from featdisco.analysis.provenance import safe_name, unclaimed_name

    name = "validation_" + safe_name(labels_path.stem)
    entry = (run.manifest.get("analyses") or {}).get(name) or {}
    try:
        words = shlex.split(str(entry.get("command") or ""))
    except ValueError:
        words = []
    held = words[-1] if words else None  # the labels file it was computed from
    full = str(labels_path.resolve())
    # an entry recorded as typed (before paths were resolved) is this file's when it reads the same
    return unclaimed_name(name, full if held == str(labels_path) else held, full)


def _target_problem(lab: Label, piece_kind: str, scans: list[str], cluster_kind: dict[int, str],
                    retired: dict[int, list[int]] | None = None) -> str | None:
    """Why ``lab``'s target cannot be checked against its piece, or None when it can;
    ``retired``: where each retired cluster id went, so a stale id's row says so."""
    m = _SCAN.fullmatch(lab.target)
    if m:
        if m.group(1) not in scans:
            have = ", ".join(f"scan:{s}" for s in scans) or "none"
            return f"unknown target {lab.target!r} (this run's scans: {have})"
        return None
    m = _CLUSTER.fullmatch(lab.target)
    if not m:
        return (f"unknown target {lab.target!r}: use scan:<name> or cluster:<kind>:<id> "
                "(kind user, thought or response)")
    kind, cid = m.group(1), int(m.group(2))
    if cid not in cluster_kind:
        if retired and cid in retired:
            into = " ".join(f"cluster:{cluster_kind.get(i, kind)}:{i}" for i in retired[cid])  # its kind, not the label's
            return (f"unknown target {lab.target!r}: cluster {cid} was retired"
                    + (f" into {into}" if into else ""))
        return f"unknown target {lab.target!r}: the run has no cluster {cid}"
    if cluster_kind[cid] != kind:
        return f"unknown target {lab.target!r}: cluster {cid} is a {cluster_kind[cid]} cluster"
    if piece_kind != kind:
        return f"piece {lab.piece_id!r} is a {piece_kind} piece; {lab.target} holds only {kind} pieces"
    return None
