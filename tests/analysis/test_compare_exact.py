"""``compare`` across three or more groups with expected counts under 5: the chi-square
approximation is wrong there, so the p-value comes from the statistic's exact distribution
(Monte-Carlo over tables with the observed margins), and the output says so."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featdisco.analysis.compare import _k_group_test, run_compare
from featdisco.analysis.stats import chi_square_k
from featdisco.cli import app
from tests.analysis.planted import PlantedPiece, write_run


def exact_p(c: list[int], n: list[int]) -> float:
    """The exact conditional p-value by enumerating every 2 x k table with these margins:
    the probability (multivariate hypergeometric) of a chi-square statistic at least the
    observed one."""
    total, k = sum(n), sum(c)
    e1 = np.array(n) * k / total
    e0 = np.array(n) * (total - k) / total

    def stat(x: np.ndarray) -> float:
        return float((((x - e1) ** 2) * (1 / e1 + 1 / e0)).sum())

    observed = stat(np.array(c))
    p = 0.0
    for x in itertools.product(*(range(m + 1) for m in n)):
        if sum(x) != k:
            continue
        prob = math.prod(math.comb(m, xi) for m, xi in zip(n, x, strict=True)) / math.comb(total, k)
        if stat(np.array(x)) >= observed - 1e-9:
            p += prob
    return p


@pytest.mark.parametrize(("c", "n"), [([3, 0, 0], [4, 4, 4]), ([4, 1, 0, 0], [5, 6, 5, 4]), ([2, 2, 0], [3, 3, 8])])
def test_small_expected_counts_use_the_exact_distribution(c: list[int], n: list[int]) -> None:
    p, test = _k_group_test(np.array(c), np.array(n), seed=0)
    assert test == "chi2-exact-mc"
    truth = exact_p(c, n)
    assert p == pytest.approx(truth, abs=0.01)  # 9,999 draws: standard error under 0.005
    assert abs(chi_square_k(c, n) - truth) > abs(p - truth)  # the approximation is the worse one


def test_large_expected_counts_keep_the_chi_square() -> None:
    c, n = np.array([30, 20, 10]), np.array([100, 100, 100])
    assert _k_group_test(c, n, seed=0) == (chi_square_k(c, n), "chi2")


def three_model_run(path: Path) -> Path:
    """Three models of 6 responses each; cluster 1 only in model a's first 3 (rare),
    cluster 0 in every piece."""
    pieces = [PlantedPiece(f"{m}{t}", 1, "response", [0] + ([1] if m == "a" and t < 3 else []), model=m)
              for m in "abc" for t in range(6)]
    return write_run(path, pieces, [("response", "Everywhere"), ("response", "Rare in a")])


def test_compare_uses_and_names_the_exact_test(tmp_path: Path) -> None:
    run = three_model_run(tmp_path / "run")
    df = run_compare(run, "model", write=False).set_index("label")
    assert df.loc["Rare in a", "test"] == "chi2-exact-mc"
    assert df.loc["Rare in a", "p_value"] == pytest.approx(exact_p([3, 0, 0], [6, 6, 6]), abs=0.01)
    result = CliRunner().invoke(app, ["compare", str(run), "--by", "model"])
    assert result.exit_code == 0, result.output
    assert "1 cluster tested with the Monte-Carlo exact chi-square test" in result.output
