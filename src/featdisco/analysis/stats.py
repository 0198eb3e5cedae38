"""The statistics the analyses share, each from SciPy (scikit-learn scores AUROC and kappa
at their call sites).

One is vectorised here rather than called per row: SciPy computes the Wilson interval only
one binomial at a time (``binomtest(k, n).proportion_ci(method="wilson")``, ~450 µs a call,
so ~45 s for the 100k (cluster, group) rates a large comparison has); ``wilson_interval`` is
the same closed form over whole arrays, checked against SciPy's in tests/analysis/test_stats.py.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

Z95 = float(special.ndtri(0.975))  # the two-sided 95% normal quantile, as SciPy's binomtest uses


def wilson_interval(count: ArrayLike, n: ArrayLike, z: float = Z95) -> tuple[NDArray[np.float64],
                                                                           NDArray[np.float64]]:
    """Wilson score interval for a binomial rate, elementwise; equal to SciPy's
    ``binomtest(count, n).proportion_ci(method="wilson")`` (vectorised: see the module note).

    Why Wilson: cluster rates are often near 0 (a behaviour in 1% of pieces), where the
    normal (Wald) interval collapses to zero width or goes negative; Wilson keeps correct
    coverage there. ``n == 0`` gives the uninformative interval [0, 1].
    """
    c = np.asarray(count, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(m > 0, c / m, 0.0)
        denom = 1.0 + z * z / m
        centre = (p + z * z / (2 * m)) / denom
        half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
        # no positives (or all): the bound is exactly 0 (1), as SciPy's, not a rounding residue
        # such as 6.9e-18 that tables would print
        low = np.where((m > 0) & (c > 0), np.clip(centre - half, 0.0, 1.0), 0.0)
        high = np.where((m > 0) & (c < m), np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high


def benjamini_hochberg(p_values: ArrayLike) -> NDArray[np.float64]:
    """Benjamini–Hochberg adjusted p-values (q-values) from SciPy's
    ``false_discovery_control``, in the input order; NaN (an untested row) stays NaN.

    Why: a comparison tests thousands of clusters at once; controlling the false discovery
    rate keeps "significant" meaning something without Bonferroni's loss of power.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def two_by_two_test(a: int, n_a: int, b: int, n_b: int, *, fisher_max: int = 10_000) -> tuple[float, str]:
    """p-value that rates ``a/n_a`` and ``b/n_b`` differ, and the test used.

    Fisher's exact test while any expected cell is under 5 or the table is small enough to
    be cheap (``n_a + n_b <= fisher_max``); Pearson's chi-square (no continuity correction)
    on large tables, where it is accurate and Fisher's cost grows with the counts.
    """
    table = np.array([[a, n_a - a], [b, n_b - b]], dtype=np.int64)
    total = n_a + n_b
    if total == 0 or (a + b) in (0, total):
        return 1.0, "none"
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / total
    if total <= fisher_max or expected.min() < 5:
        return float(stats.fisher_exact(table)[1]), "fisher"
    _, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(p), "chi2"


def chi_square_k(counts: ArrayLike, ns: ArrayLike) -> float:
    """Chi-square test of equal rates across k groups (a 2 × k table); 1.0 when degenerate."""
    c = np.asarray(counts, dtype=np.float64)
    m = np.asarray(ns, dtype=np.float64)
    keep = m > 0
    c, m = c[keep], m[keep]
    if len(c) < 2 or c.sum() in (0, m.sum()):
        return 1.0
    table = np.vstack([c, m - c])
    return float(stats.chi2_contingency(table, correction=False)[1])


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact McNemar (sign) test on discordant pairs: prompts where only group A shows the
    cluster versus only group B. Concordant prompts carry no information about the difference."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


def hypergeom_sf(k: ArrayLike, total: int, n_i: ArrayLike, n_j: ArrayLike) -> NDArray[np.float64]:
    """P(co-count ≥ k) when ``n_j`` items are drawn from ``total`` of which ``n_i`` are marked:
    the one-sided Fisher test that two clusters co-occur more than chance."""
    return np.asarray(stats.hypergeom.sf(np.asarray(k) - 1, total, n_i, n_j), dtype=np.float64)

