"""Compare groups (models, checkpoints, datasets, any metadata column): how often each
cluster occurs in each group, and which differences are real.

Unit of analysis: pieces of the cluster's kind (default) or transcripts. Per cluster, the
rate of every group with a Wilson interval; for the two groups furthest apart, the rate
ratio and a test (Fisher's exact, chi-square on large tables; a 2 × k chi-square across all
groups when there are more than two, or, when an expected count of that table is under 5
and the chi-square approximation fails, its Monte-Carlo exact version: the p-value of the
chi-square statistic over tables drawn with the same margins; column ``test`` says which),
Benjamini–Hochberg across clusters. When the groups
answer the same prompts (MT-bench question ids, AlpacaEval instructions), a paired exact
McNemar test over prompts is added: it removes the prompt-to-prompt variation that the
unpaired test counts as noise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np
import pandas as pd
from scipy import sparse

from featdisco.analysis.activations import Activations, load_activations, write_analysis
from featdisco.analysis.stats import (
    benjamini_hochberg,
    chi_square_k,
    mcnemar_exact,
    two_by_two_test,
    wilson_interval,
)
from featdisco.errors import FeatdiscoError

PAIRED_MIN_SHARE = 0.5
MIN_EXPECTED = 5.0  # Cochran's rule: below this expected count the chi-square p-value is not to be trusted
PERMUTATIONS = 9_999  # tables drawn for the Monte-Carlo exact test (p resolution 1e-4)
Presence = tuple[dict[str, int], sparse.csc_matrix]  # prompt key → row, prompt × cluster  # groups "answer the same prompts" when this share of prompts is shared


def prompt_keys(act: Activations) -> pd.Series:
    """A prompt key per piece: metadata ``question_id`` (MT-bench, Arena-Hard) when present,
    else the text of the transcript's first user turn (AlpacaEval instructions)."""
    pieces = act.pieces
    try:
        qid = act.column("question_id")
    except FeatdiscoError:
        qid = pd.Series([None] * len(pieces), index=pieces.index, dtype=object)
    users = pieces[pieces["kind"] == "user"].sort_values("turn")
    first_user = users.groupby("transcript_row")["text"].first() if "text" in pieces else pd.Series(dtype=object)
    by_text = pieces["transcript_row"].map(first_user)
    return pd.Series(np.where(qid.notna(), "q:" + qid.astype(str), "t:" + by_text.astype(str)),
                     index=pieces.index).where(qid.notna() | by_text.notna())


def compare_groups(act: Activations, by: str, *, unit: str = "piece", groups: list[str] | None = None,
                   min_count: int = 1, alpha: float = 0.05, paired: bool | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per cluster ranked by effect, rates per cluster × group). Clusters a
    researcher hid are neither tested nor counted in the Benjamini–Hochberg correction;
    ``attrs["hidden_left_out"]``: their ids."""
    if unit not in ("piece", "transcript"):
        raise FeatdiscoError(f"--unit must be piece or transcript, got {unit!r}")
    if not 0 < alpha < 1:
        raise FeatdiscoError(f"--alpha {alpha}: a false discovery rate is between 0 and 1, e.g. 0.05")
    values = act.column(by).astype(object)
    present = sorted({str(v) for v in values.dropna()})
    if groups:
        missing = [g for g in groups if g not in present]
        if missing:
            raise FeatdiscoError(f"--groups: {', '.join(missing)} not among the values of {by!r}: "
                                 f"{', '.join(present[:20])}")
        present = list(groups)
    if len(present) < 2:
        raise FeatdiscoError(f"{by!r} has {len(present)} group(s) ({', '.join(present)}); "
                             "comparing needs two or more")
    kinds = act.pieces["kind"].to_numpy()
    gvals = values.map(lambda v: None if v is None else str(v)).to_numpy(dtype=object)
    keys = prompt_keys(act).to_numpy(dtype=object)
    rates: list[_GroupRate] = []
    summary: list[_Difference] = []
    skipped: dict[str, str] = {}  # kind → the only group that has pieces of it
    hidden = act.hidden_mask
    for kind in sorted(set(kinds)):
        cols = np.nonzero(act.kind_mask(kind) & ~hidden)[0]
        if len(cols) == 0:
            continue
        counts, ns, presence = _group_counts(act, kinds == kind, gvals, keys, present, cols, unit)
        if (ns > 0).sum() < 2:  # nothing to compare: say so instead of comparing a group with itself
            skipped[kind] = ", ".join(g for g, n in zip(present, ns, strict=True) if n) or "none"
            continue
        for j, cid in enumerate(cols):
            c, n = counts[:, j], ns
            low, high = wilson_interval(c, n)
            for g, cg, ng, lo, hi in zip(present, c, n, low, high, strict=True):
                rates.append({"cluster_id": int(cid), "group": g, "count": int(cg), "n": int(ng),
                              "rate": cg / ng if ng else np.nan, "ci_low": lo, "ci_high": hi})
            if c.sum() < min_count:
                continue
            summary.append(_summarise(int(cid), kind, present, c, n, presence, j, paired))
    df = pd.DataFrame(summary)
    if df.empty:
        raise FeatdiscoError(f"no cluster occurs {min_count}+ times in groups {', '.join(present)}")
    df["q_value"] = benjamini_hochberg(df["p_value"].to_numpy())
    df["significant"] = df["q_value"] < alpha
    if "paired_p" in df:
        df["paired_q"] = benjamini_hochberg(df["paired_p"].to_numpy())
    labels = act.clusters["label"].to_numpy()
    df.insert(2, "label", [labels[c] for c in df["cluster_id"]])
    df["abs_log2_ratio"] = df["log2_ratio"].abs()
    df = df.sort_values(["significant", "abs_log2_ratio", "p_value"], ascending=[False, False, True])
    df = df.drop(columns="abs_log2_ratio").reset_index(drop=True)
    df.attrs["kinds_not_compared"] = skipped
    compared = sorted(set(kinds) - set(skipped))  # the kinds whose clusters were tested
    df.attrs["hidden_kinds"] = compared
    df.attrs["hidden_left_out"] = [c for c in act.hidden_ids if act.clusters["kind"].iloc[c] in compared]
    return df, pd.DataFrame(rates)


def _group_counts(act: Activations, kind_rows: np.ndarray, gvals: np.ndarray, keys: np.ndarray,
                  present: list[str], cols: np.ndarray, unit: str
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Presence]]:
    """Counts (groups × clusters), denominators per group, and per group a prompt × cluster
    presence table (rows keyed by prompt and turn for pieces, by prompt for transcripts)."""
    pieces = act.pieces
    counts = np.zeros((len(present), len(cols)), dtype=np.int64)
    ns = np.zeros(len(present), dtype=np.int64)
    presence: dict[str, Presence] = {}
    for gi, g in enumerate(present):
        rows = np.nonzero(kind_rows & (gvals == g))[0]
        if unit == "piece":
            m = act.piece_matrix[rows][:, cols]
            pair_key = [f"{k}|{t}" for k, t in zip(keys[rows], pieces["turn"].to_numpy()[rows], strict=True)]
        else:
            trows = np.unique(pieces["transcript_row"].to_numpy()[rows])
            m = act.transcript_matrix[trows][:, cols]
            first = pd.Series(keys[rows], index=pieces["transcript_row"].to_numpy()[rows])
            first = first[~first.index.duplicated()]
            pair_key = [str(first.get(t)) for t in trows]
        counts[gi] = np.asarray(m.getnnz(axis=0))
        ns[gi] = m.shape[0]
        valid = np.array([k is not None and not k.startswith("None|") and k != "None"
                          and not k.startswith("nan") for k in pair_key])
        if valid.any():
            codes, uniq = pd.factorize(np.asarray(pair_key, dtype=object)[valid])
            agg = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                                    shape=(len(uniq), len(codes)))
            pres = (agg @ m[np.nonzero(valid)[0]]).tocsc()
            pres.data[:] = 1
            presence[g] = ({str(k): i for i, k in enumerate(uniq)}, pres)
    return counts, ns, presence


def _summarise(cid: int, kind: str, groups: list[str], c: np.ndarray, n: np.ndarray,
               presence: dict[str, Presence], j: int, paired: bool | None) -> _Difference:
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, c / n, np.nan)
    hi, lo = int(np.nanargmax(rate)), int(np.nanargmin(rate))
    has = n > 0  # a group without pieces of this kind has no rate to test
    if hi == lo:  # every rate equal: still name two different groups, not one twice
        lo = next(i for i in range(len(groups)) if has[i] and i != hi)
    if has.sum() == 2:
        p, test = two_by_two_test(int(c[hi]), int(n[hi]), int(c[lo]), int(n[lo]))
    else:
        p, test = _k_group_test(c[has], n[has], seed=cid)
    # a smoothed ratio ranks 3/100 vs 0/100 sensibly; the raw one is kept for reading
    smooth = ((c[hi] + 0.5) / (n[hi] + 1)) / ((c[lo] + 0.5) / (n[lo] + 1))
    row: _Difference = {
        "cluster_id": cid, "kind": kind, "group_high": groups[hi], "group_low": groups[lo],
        "count_high": int(c[hi]), "n_high": int(n[hi]), "rate_high": rate[hi],
        "count_low": int(c[lo]), "n_low": int(n[lo]), "rate_low": rate[lo],
        "rate_ratio": rate[hi] / rate[lo] if rate[lo] > 0 else np.inf,
        "log2_ratio": float(np.log2(smooth)), "difference": rate[hi] - rate[lo],
        "test": test, "p_value": p,
    }
    a, b = presence.get(groups[hi]), presence.get(groups[lo])
    if a is not None and b is not None:
        shared = [k for k in a[0] if k in b[0]]
        share = len(shared) / max(1, min(len(a[0]), len(b[0])))
        if paired or (paired is None and share >= PAIRED_MIN_SHARE and len(shared) >= 5):
            pa_ = a[1][:, j].toarray().ravel()[[a[0][k] for k in shared]] > 0
            pb_ = b[1][:, j].toarray().ravel()[[b[0][k] for k in shared]] > 0
            only_a, only_b = int((pa_ & ~pb_).sum()), int((~pa_ & pb_).sum())
            row["paired_prompts"], row["paired_only_high"], row["paired_only_low"] = len(shared), only_a, only_b
            row["paired_p"] = mcnemar_exact(only_a, only_b)
    return row


def _k_group_test(c: np.ndarray, n: np.ndarray, *, seed: int) -> tuple[float, str]:
    """p that k >= 3 rates differ: the chi-square test, or, when an expected count is under
    :data:`MIN_EXPECTED` (rare clusters, small groups), the same statistic's exact
    distribution estimated from :data:`PERMUTATIONS` tables with the observed margins (the
    positives dealt to the groups at random: a multivariate hypergeometric draw)."""
    c, n = np.asarray(c, dtype=np.int64), np.asarray(n, dtype=np.int64)
    total, k = int(n.sum()), int(c.sum())
    if k in (0, total):
        return 1.0, "none"
    e1 = n * k / total
    e0 = n * (total - k) / total
    if min(e1.min(), e0.min()) >= MIN_EXPECTED:
        return chi_square_k(c, n), "chi2"
    weight = 1 / e1 + 1 / e0

    def stat(x: np.ndarray) -> np.ndarray:
        return np.asarray((((x - e1) ** 2) * weight).sum(axis=-1))

    draws = np.random.default_rng(seed).multivariate_hypergeometric(n, k, size=PERMUTATIONS)
    observed = float(stat(c))
    extreme = int((stat(draws) >= observed * (1 - 1e-9)).sum())
    return (extreme + 1) / (PERMUTATIONS + 1), "chi2-exact-mc"


class _GroupRate(TypedDict):
    """A cluster's rate in one group, with its Wilson interval (``rates`` of the result)."""

    cluster_id: int
    group: str
    count: int
    n: int
    rate: float
    ci_low: float
    ci_high: float


class _Difference(TypedDict):
    """A cluster's highest and lowest group, their rates and the test between them; the
    paired figures when the groups share prompts."""

    cluster_id: int
    kind: str
    group_high: str
    group_low: str
    count_high: int
    n_high: int
    rate_high: float
    count_low: int
    n_low: int
    rate_low: float
    rate_ratio: float
    log2_ratio: float
    difference: float
    test: str
    p_value: float
    paired_prompts: NotRequired[int]
    paired_only_high: NotRequired[int]
    paired_only_low: NotRequired[int]
    paired_p: NotRequired[float]


def run_compare(run_dir: str | Path, by: str, *, unit: str = "piece", groups: list[str] | None = None,
                min_count: int = 1, alpha: float = 0.05, paired: bool | None = None,
                write: bool = True) -> pd.DataFrame:
    """:func:`compare_groups` on a run directory; writes ``analysis_compare_<by>.parquet``
    (one row per cluster) and ``analysis_compare_<by>_rates.parquet`` (one row per cluster and
    group), so that comparisons by different columns are all kept. ``df.attrs["no_value"]``:
    pieces (transcripts, with ``unit="transcript"``) left out because they have no value of ``by``."""
    act = load_activations(run_dir)
    df, rates = compare_groups(act, by, unit=unit, groups=groups, min_count=min_count, alpha=alpha,
                               paired=paired)
    df.insert(0, "by", by)
    if write:
        from featdisco.analysis.provenance import analysis_name

        # a different question (unit, groups) gets its own name; other settings replace it
        name = analysis_name(compare_name(by), {"unit": unit, "groups": groups}, {"unit": "piece", "groups": None})
        paired_flag = {} if paired is None else {"paired" if paired else "unpaired": True}
        write_analysis(run_dir, name, df, extra={"_rates": rates.assign(by=by)}, command="compare",
                       args={"by": by, "unit": unit, "groups": groups, "min_count": min_count, "alpha": alpha,
                             **paired_flag}, hidden=df.attrs["hidden_left_out"],
                       hidden_kinds=df.attrs["hidden_kinds"])
    missing = act.column(by).isna().to_numpy()
    # counted in the unit compared: with --unit transcript, transcripts are what is left out
    df.attrs["no_value"] = (int(act.pieces["transcript_id"][missing].nunique()) if unit == "transcript"
                            else int(missing.sum()))
    df.attrs["unit"] = unit
    return df


def compare_name(by: str) -> str:
    """``compare_<by>``, with anything but letters, digits, ``-`` and ``_`` as ``_``
    (``metadata.judge.score`` → ``compare_metadata_judge_score``)."""
    return "compare_" + re.sub(r"[^A-Za-z0-9_-]+", "_", by).strip("_")
