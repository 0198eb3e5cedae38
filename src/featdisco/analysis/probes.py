"""Probes: does what the user says predict what the model thinks or answers? (SPEC step 9)

For the most common thought and response clusters, one logistic regression each, from the
binary vector of user clusters of the user turn before that thought or response (or of the
whole transcript's user turns). The held-out split is grouped by transcript, so turns of one
conversation never sit on both sides. Every target is reported against the best F1 a
predictor that ignores the input could expect, ``2b / (1 + b)`` for test base rate ``b``
(always answering "present"), so "beats the baseline" means the user turn carries signal,
and against a permutation null: the chance that the test labels, shuffled, would meet the
probe's predictions as often as they did (exact, hypergeometric), with Benjamini–Hochberg
q-values over all targets, so ``beats_null`` marks the links that are not luck.

The decision threshold is chosen on a validation split of the *training* transcripts (the
one that maximises F1 there); the test split is only scored. With balanced class weights
the default cut (score 0) predicts "present" wherever the target is likelier than its base
rate, which spends precision on weakly related user clusters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse
from scipy.stats import false_discovery_control, hypergeom
from sklearn.metrics import roc_auc_score

from featdisco.analysis.activations import Activations, load_activations, write_analysis
from featdisco.errors import FeatdiscoError

TARGET_KINDS = ("thought", "response")


class PermutationNull(TypedDict):
    null_f1: float  # the null's mean F1
    null_f1_95: float  # its 95th percentile
    p_value: float  # P(TP >= the probe's TP) under the null


class _Target(TypedDict):
    """A probe row's target and the counts its split gave."""

    kind: str
    cluster_id: int
    n_train: int
    train_positives: int
    n_test: int
    test_positives: int
    base_rate: float
    baseline_f1: float


class _Score(PermutationNull):
    """A probe row's scores (NaN where the probe could not be fitted)."""

    status: str
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    auroc: float
    threshold: float
    threshold_from: str  # default (cut 0), validation, or "" when not fitted
    top_user_clusters: list[int]
    top_weights: list[float]


class _ProbeRow(_Target, _Score):
    """A row of :func:`fit_probes` before the columns computed over the whole table."""


@dataclass(slots=True)
class ProbeData:
    """Design and targets for one target kind: rows are thought or response pieces."""

    kind: str
    X: sparse.csr_matrix  # samples × user clusters
    Y: sparse.csc_matrix  # samples × target clusters
    groups: NDArray[np.int64]  # transcript row of each sample
    user_cluster_ids: NDArray[np.int64]
    target_ids: NDArray[np.int64]


def probe_data(act: Activations, kind: str, *, n_targets: int = 1000, context: str = "turn",
               min_positives: int = 10) -> ProbeData:
    """Samples are the pieces of ``kind``; features the user clusters of the user turn just
    before each one (``context='turn'``) or of every user turn in its transcript
    (``'transcript'``); targets the ``n_targets`` most frequent clusters of ``kind`` with at
    least ``min_positives`` pieces, leaving out the clusters a researcher hid (they stay
    inputs: what the user asked is still there)."""
    if context not in ("turn", "transcript"):
        raise FeatdiscoError(f"context must be 'turn' or 'transcript', got {context!r}")
    pieces = act.pieces
    kinds = pieces["kind"].to_numpy()
    rows = np.nonzero(kinds == kind)[0]
    user_cols = np.nonzero(act.kind_mask("user"))[0]
    if len(rows) == 0 or len(user_cols) == 0:
        raise FeatdiscoError(f"probes need user pieces and {kind} pieces; this run has "
                             f"{int((kinds == 'user').sum())} user and {len(rows)} {kind} pieces")
    user_matrix = act.piece_matrix[:, user_cols].tocsr()
    trow = pieces["transcript_row"].to_numpy()
    if context == "turn":
        src = _previous_user_piece(pieces, rows)
        has = src >= 0
        X = user_matrix[np.where(has, src, 0)].tocsr()
        X = sparse.diags(has.astype(np.float64)) @ X  # no preceding user turn: empty row
    else:
        user_rows = np.nonzero(kinds == "user")[0]
        agg = sparse.csr_matrix((np.ones(len(user_rows)), (trow[user_rows], user_rows)),
                                shape=(len(act.transcript_ids), len(pieces)))
        X = (agg @ user_matrix)[trow[rows]]
    X = sparse.csr_matrix(X, dtype=np.float64)
    X.data[:] = 1.0
    target_cols = np.nonzero(act.kind_mask(kind) & ~act.hidden_mask)[0]  # a hidden cluster is no target
    counts = np.asarray(act.piece_matrix[rows][:, target_cols].getnnz(axis=0))
    order = np.argsort(-counts, kind="stable")
    chosen = [c for c in order if counts[c] >= min_positives][:n_targets]
    target_ids = target_cols[np.asarray(chosen, dtype=np.int64)]
    Y = act.piece_matrix[rows][:, target_ids].tocsc()
    return ProbeData(kind, X, Y, trow[rows].astype(np.int64), user_cols.astype(np.int64),
                     target_ids.astype(np.int64))


def _previous_user_piece(pieces: pd.DataFrame, rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each target row, the row of the last user piece earlier in the same transcript
    (-1 when there is none)."""
    users = pieces.index[pieces["kind"] == "user"].to_numpy()
    left = pd.DataFrame({"t": pieces["transcript_row"].to_numpy()[rows],
                         "turn": pieces["turn"].to_numpy()[rows].astype(np.int64), "pos": np.arange(len(rows))})
    right = pd.DataFrame({"t": pieces["transcript_row"].to_numpy()[users],
                          "turn": pieces["turn"].to_numpy()[users].astype(np.int64), "src": users})
    merged = pd.merge_asof(left.sort_values("turn"), right.sort_values("turn"), on="turn", by="t",
                           direction="backward", allow_exact_matches=False)
    out = np.full(len(rows), -1, dtype=np.int64)
    ok = merged["src"].notna().to_numpy()
    out[merged["pos"].to_numpy()[ok]] = merged["src"].to_numpy()[ok].astype(np.int64)
    return out


def grouped_split(groups: NDArray[np.int64], test_size: float, seed: int) -> NDArray[np.bool_]:
    """True for test samples: a random ``test_size`` share of transcripts goes to test whole."""
    if not 0 < test_size < 1:
        raise FeatdiscoError(f"test size {test_size}: must be strictly between 0 and 1")
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    in_test = np.random.default_rng(seed).random(n_groups) < test_size
    return np.asarray(in_test[groups])


MIN_VALIDATION_POSITIVES = 3  # fewer, and the threshold stays at the default cut (0)
_Fitted = tuple[NDArray[np.float64] | None, float, NDArray[np.float64] | None, float | None]


def best_threshold(y: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    """The cut on ``scores`` (predict ``score > cut``) with the highest F1 on ``y``; among
    equal F1 the highest cut, placed midway to the next lower score."""
    values = np.unique(scores)[::-1]  # descending
    pos = np.bincount(np.searchsorted(-values, -scores), weights=y, minlength=len(values))
    cnt = np.bincount(np.searchsorted(-values, -scores), minlength=len(values))
    tp, pred = np.cumsum(pos), np.cumsum(cnt)
    f1 = 2 * tp / (pred + y.sum())
    i = int(np.argmax(f1))
    return float((values[i] + values[i + 1]) / 2) if i + 1 < len(values) else float(values[i] - 1.0)


def _fit_batch(X_train: sparse.csr_matrix, Y_train: sparse.csc_matrix, X_test: sparse.csr_matrix,
               C: float, class_weight: str | None, val: NDArray[np.bool_] | None) -> list[_Fitted]:
    """Fit each column of ``Y_train``; return (coef, intercept, test scores, threshold) per
    target. With a validation mask ``val`` over the training rows, a first fit on the other
    training rows picks the F1-best threshold on ``val``; the final fit uses every training
    row. The threshold is None when validation cannot choose one (then the cut is 0)."""
    from sklearn.linear_model import LogisticRegression

    # liblinear: a primal trust-region Newton solver, fastest here for sparse binary
    # inputs with n ≫ d (bench/probe.py); it also regularises the intercept, which is
    # harmless with thousands of samples. tol=1e-2 halves the time of 1e-3 for the same
    # thresholded predictions (measured in bench/probe.py).
    def model() -> Any:
        return LogisticRegression(solver="liblinear", C=C, class_weight=class_weight, tol=1e-2)

    X_fit = X_train[~val] if val is not None else None
    X_val = X_train[val] if val is not None else None
    out: list[_Fitted] = []
    for j in range(Y_train.shape[1]):
        y = Y_train[:, j].toarray().ravel() > 0
        if y.all() or not y.any():
            out.append((None, 0.0, None, None))
            continue
        threshold = None
        if val is not None:
            y_fit, y_val = y[~val], y[val]
            if y_val.sum() >= MIN_VALIDATION_POSITIVES and 0 < y_fit.sum() < len(y_fit):
                inner = model().fit(X_fit, y_fit)
                threshold = best_threshold(y_val, inner.decision_function(X_val))
        final = model().fit(X_train, y)
        out.append((final.coef_[0].astype(np.float64), float(final.intercept_[0]),
                    final.decision_function(X_test), threshold))
    return out


def fit_probes(data: ProbeData, *, test_size: float = 0.25, seed: int = 0, C: float = 1.0,
               class_weight: str | None = "balanced", top_weights: int = 5, n_jobs: int | None = None,
               labels: NDArray[Any] | None = None, validation_size: float | None = 0.25,
               alpha: float = 0.05) -> pd.DataFrame:
    """Fit and score one probe per target; one row per target with every count behind it.

    ``validation_size``: the share of training transcripts on which the threshold is chosen
    (None: the default cut 0). ``alpha``: the FDR level of ``beats_null``."""
    from joblib import Parallel, delayed

    test = grouped_split(data.groups, test_size, seed)
    X_train, X_test = data.X[~test], data.X[test]
    Y_train, Y_test = data.Y[~test].tocsc(), data.Y[test].tocsc()
    val = None if validation_size is None else grouped_split(data.groups[~test], validation_size, seed + 1)
    T = data.Y.shape[1]
    n_jobs = n_jobs or min(os.cpu_count() or 1, 8)
    chunk = max(1, -(-T // (n_jobs * 4)))
    batches = [(s, min(T, s + chunk)) for s in range(0, T, chunk)]
    if n_jobs > 1 and len(batches) > 1:
        results = Parallel(n_jobs=n_jobs)(delayed(_fit_batch)(X_train, Y_train[:, a:b], X_test, C, class_weight,
                                                              val) for a, b in batches)
    else:
        results = [_fit_batch(X_train, Y_train[:, a:b], X_test, C, class_weight, val) for a, b in batches]
    fitted = [r for batch in results for r in batch]
    rows: list[_ProbeRow] = []
    for j, (coef, _b, scores, threshold) in enumerate(fitted):
        y_test = Y_test[:, j].toarray().ravel() > 0
        train_pos = int(Y_train[:, j].nnz)
        n_test, test_pos = len(y_test), int(y_test.sum())
        base = test_pos / n_test if n_test else float("nan")
        target = _Target(kind=data.kind, cluster_id=int(data.target_ids[j]),
                         n_train=X_train.shape[0], train_positives=train_pos,
                         n_test=n_test, test_positives=test_pos, base_rate=base,
                         baseline_f1=2 * base / (1 + base) if n_test else float("nan"))
        if coef is None or scores is None:
            score = _Score(status="one class in train", tp=0, fp=0, fn=test_pos, precision=np.nan,
                           recall=np.nan, f1=np.nan, auroc=np.nan, threshold=np.nan, threshold_from="",
                           null_f1=np.nan, null_f1_95=np.nan, p_value=np.nan, top_user_clusters=[],
                           top_weights=[])
        else:
            cut = 0.0 if threshold is None else threshold
            pred = scores > cut
            tp = int((pred & y_test).sum())
            fp = int((pred & ~y_test).sum())
            fn = test_pos - tp
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / test_pos if test_pos else float("nan")
            f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
            best = np.argsort(-coef)[:top_weights]
            best = best[coef[best] > 0]
            score = _Score(status="ok", tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1,
                           auroc=auroc(y_test, scores), threshold=cut,
                           threshold_from="default" if threshold is None else "validation",
                           **permutation_null(tp, n_test, test_pos, int(pred.sum())),
                           top_user_clusters=[int(c) for c in data.user_cluster_ids[best]],
                           top_weights=[float(w) for w in coef[best]])
        row: _ProbeRow = {**target, **score}  # the table's columns, in this order
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["f1_lift"] = df["f1"] - df["baseline_f1"]
        # a tolerance: a probe that predicts "present" everywhere has exactly the baseline F1
        df["beats_baseline"] = (df["f1"] > df["baseline_f1"] + 1e-9) & (df["auroc"] > 0.5)
        p = df["p_value"].to_numpy(dtype=np.float64)
        q = np.full(len(p), np.nan)
        ok = np.isfinite(p)
        if ok.any():
            q[ok] = false_discovery_control(p[ok])
        df["q_value"] = q
        df["beats_null"] = ok & (q < alpha)
    if labels is not None and len(df):
        df.insert(2, "label", [labels[c] for c in df["cluster_id"]])
        df["top_user_labels"] = [[str(labels[c]) for c in cs] for cs in df["top_user_clusters"]]
    return df


def run_probes(run_dir: str | Path, *, n_targets: int = 1000, kinds: tuple[str, ...] = TARGET_KINDS,
               context: str = "turn", test_size: float = 0.25, seed: int = 0, C: float = 1.0,
               class_weight: str | None = "balanced", min_positives: int = 10,
               n_jobs: int | None = None, write: bool = True,
               validation_size: float | None = 0.25) -> pd.DataFrame:
    """Probes for each target kind present in the run, saved as ``analysis_probes.parquet``."""
    act = load_activations(run_dir)
    labels = act.clusters["label"].to_numpy()
    present = set(act.pieces["kind"])
    frames = []
    for kind in kinds:
        if kind not in present:
            continue
        data = probe_data(act, kind, n_targets=n_targets, context=context, min_positives=min_positives)
        if len(data.target_ids):
            frames.append(fit_probes(data, test_size=test_size, seed=seed, C=C, class_weight=class_weight,
                                     n_jobs=n_jobs, labels=labels, validation_size=validation_size))
    if not frames:
        raise FeatdiscoError(f"no thought or response cluster occurs in {min_positives}+ pieces; "
                             "nothing to probe (lower --min-positives?)")
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(["kind", "f1_lift"], ascending=[True, False], na_position="last").reset_index(drop=True)
    probed = sorted(k for k in kinds if k in present)
    hidden = [c for c in act.hidden_ids if act.clusters["kind"].iloc[c] in probed]  # left out as targets
    df.attrs["hidden_left_out"] = hidden
    if write:
        from featdisco.analysis.provenance import analysis_name

        write_analysis(run_dir, analysis_name("probes", {"context": context}, {"context": "turn"}), df,
                       command="probe", args={"targets": n_targets, "context": context,
                                              "class_weight": class_weight or "none", "C": C,
                                              "test_size": test_size, "min_positives": min_positives,
                                              "seed": seed}, hidden=hidden, hidden_kinds=probed)
    return df


def permutation_null(tp: int, n: int, positives: int, predicted: int) -> PermutationNull:
    """The probe's test F1 against its permutation null, exactly: shuffling the test labels
    under fixed predictions makes TP hypergeometric (``n`` rows, ``positives`` labelled,
    ``predicted`` drawn), and F1 = 2·TP / (predicted + positives) with both margins fixed.
    Returns the null's mean F1, its 95th percentile and the one-sided p-value P(TP ≥ tp)
    (Fisher's exact test of the confusion table): every shuffle at once, so it costs
    nothing per target. Pieces are treated as exchangeable; pieces of one transcript can be
    alike, so read small p-values of rare targets with care."""
    denom = predicted + positives
    if n == 0 or denom == 0:
        return PermutationNull(null_f1=float("nan"), null_f1_95=float("nan"), p_value=float("nan"))
    return PermutationNull(null_f1=2 * predicted * positives / n / denom,
                           null_f1_95=float(2 * hypergeom.ppf(0.95, n, positives, predicted) / denom),
                           p_value=float(hypergeom.sf(tp - 1, n, positives, predicted)))


def summarize_probes(df: pd.DataFrame) -> pd.DataFrame:
    """Per kind: targets probed, how many beat the baseline and the permutation null (at the
    FDR of ``beats_null``), and by how much (median lift)."""
    out = []
    for kind, g in df.groupby("kind", sort=True):
        ok = g[g["status"] == "ok"]
        beat = ok[ok["beats_baseline"]]
        out.append({"kind": kind, "targets": len(g), "fitted": len(ok), "beat_baseline": len(beat),
                    "beat_null": int(ok["beats_null"].sum()) if "beats_null" in ok else 0,
                    "beat_by_0.1": int((ok["f1_lift"] >= 0.1).sum()),
                    "median_f1": float(ok["f1"].median()) if len(ok) else np.nan,
                    "median_baseline_f1": float(ok["baseline_f1"].median()) if len(ok) else np.nan,
                    "median_lift_of_winners": float(beat["f1_lift"].median()) if len(beat) else np.nan})
    return pd.DataFrame(out)


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's ROC AUC; NaN when the test set holds one class only (it is undefined)."""
    y = np.asarray(y, dtype=bool)
    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")
