"""The statistics against reference values worked out by hand or from their definitions, and
the one computed here (the vectorised Wilson interval) against SciPy's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from featdisco.analysis.probes import auroc
from featdisco.analysis.stats import (
    Z95,
    benjamini_hochberg,
    chi_square_k,
    hypergeom_sf,
    mcnemar_exact,
    two_by_two_test,
    wilson_interval,
)


def test_wilson_endpoints_solve_the_score_equation() -> None:
    # The Wilson interval is {p : |p̂ − p| = z·sqrt(p(1−p)/n)}; check both ends satisfy it.
    for c, n in [(81, 263), (1, 50), (0, 20), (20, 20), (5, 7)]:
        low, high = wilson_interval(c, n)
        phat = c / n
        for p in (float(low), float(high)):
            if p in (0.0, 1.0) and phat == p:
                continue
            assert abs(abs(phat - p) - Z95 * math.sqrt(p * (1 - p) / n)) < 1e-9
        assert low <= phat <= high


def test_wilson_known_value_and_empty_group() -> None:
    low, high = wilson_interval([81, 0], [263, 0])
    assert low[0] == pytest.approx(0.2553, abs=1e-4) and high[0] == pytest.approx(0.3662, abs=1e-4)
    assert (low[1], high[1]) == (0.0, 1.0)


def test_wilson_bound_is_exactly_zero_or_one_at_no_or_all_positives() -> None:
    # SciPy gives exactly 0 and 1 there; a rounding residue (6.9e-18 at 0 of 35) shows up in tables
    for n in (3, 35, 70, 1000):
        low, high = wilson_interval([0, n], [n, n])
        ref0 = stats.binomtest(0, n).proportion_ci(method="wilson")
        ref1 = stats.binomtest(n, n).proportion_ci(method="wilson")
        assert (float(low[0]), float(high[1])) == (0.0, 1.0) == (ref0.low, ref1.high), n


def test_wilson_matches_scipys_binomtest_interval() -> None:
    # SciPy's interval one binomial at a time, against ours over the whole array at once
    rng = np.random.default_rng(0)
    n = np.concatenate([rng.integers(1, 2000, 300), [1, 2, 5, 10_000]])
    c = np.concatenate([rng.integers(0, n[:300] + 1), [0, 2, 1, 3]])
    low, high = wilson_interval(c, n)
    want = np.array([tuple(stats.binomtest(int(k), int(m)).proportion_ci(method="wilson"))
                     for k, m in zip(c, n, strict=True)])
    np.testing.assert_allclose(low, want[:, 0], atol=1e-12)
    np.testing.assert_allclose(high, want[:, 1], atol=1e-12)


def test_benjamini_hochberg_hand_example() -> None:
    # sorted p: .005 .01 .03 .04 → p·m/i: .02 .02 .04 .04 (already monotone)
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    assert q == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # monotonicity step: .01 .02 .03 with m = 3 → .03 .03 .03
    assert benjamini_hochberg([0.02, 0.01, 0.03]) == pytest.approx([0.03, 0.03, 0.03])
    q = benjamini_hochberg([0.5, np.nan])
    assert q[0] == 0.5 and np.isnan(q[1])


def test_fisher_lady_tasting_tea() -> None:
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: two-sided p = 34/70
    p, test = two_by_two_test(3, 4, 1, 4)
    assert test == "fisher" and p == pytest.approx(34 / 70)


def test_chi_square_on_large_tables() -> None:
    # 300/1000 vs 250/1000: Pearson X² = 2000·(300·750 − 700·250)² / (550·1450·1000·1000)
    x2 = 2000 * (300 * 750 - 700 * 250) ** 2 / (550 * 1450 * 1000 * 1000)
    p, test = two_by_two_test(300, 1000, 250, 1000, fisher_max=100)
    assert test == "chi2" and p == pytest.approx(math.erfc(math.sqrt(x2 / 2)))
    assert chi_square_k([300, 250], [1000, 1000]) == pytest.approx(p)
    assert two_by_two_test(0, 10, 0, 10) == (1.0, "none")


def test_mcnemar_and_hypergeometric() -> None:
    # 9 discordant pairs all one way: two-sided sign test p = 2 · 0.5^9
    assert mcnemar_exact(9, 0) == pytest.approx(2 * 0.5 ** 9)
    assert mcnemar_exact(0, 0) == 1.0
    # P(X ≥ 2) drawing 2 from 4 with 2 marked = 1 / C(4, 2)
    assert float(hypergeom_sf(2, 4, 2, 2)) == pytest.approx(1 / 6)


def test_auroc_rank_identity() -> None:
    # 4 positive-negative pairs, 3 ordered right: 0.75; all tied: ties count half
    y = np.array([0, 0, 1, 1])
    assert auroc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert math.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))  # one class: undefined


def test_kappa_hand_example() -> None:
    # 10 items, raters agree on 7; marginals 6/4 and 5/5: pe = (6·5 + 4·5)/100 = 0.5,
    # kappa = (0.7 − 0.5) / (1 − 0.5) = 0.4
    truth = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    pred = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    assert cohen_kappa_score(truth, pred) == pytest.approx(0.4)
