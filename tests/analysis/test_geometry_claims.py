"""Verdicts large_equivalence and piecewise_linear (analysis/geometry_claims.py, named query
geometry_claims) on the fixture run with equivalence rows, and their exact intervals against
brute-force binomial sums."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis.claims import load_criteria
from analysis.db import open_runs
from analysis.geometry_claims import large_equivalence_check, median_interval, piecewise_linear_check, rate_interval
from analysis.named import run_named
from tests.support.runs import make_fixture_run


def _cdf(n: int, p: float, k: int) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("n, k", [(10, 0), (10, 3), (10, 10), (40, 37), (200, 150)])
def test_clopper_pearson_bounds_solve_the_binomial_tails(n: int, k: int) -> None:
    low, high = rate_interval(n, k, 0.95)
    assert 0 <= low <= k / n <= high <= 1
    if k > 0:
        assert 1 - _cdf(n, low, k - 1) == pytest.approx(0.025, abs=1e-9)
    else:
        assert low == 0
    if k < n:
        assert _cdf(n, high, k) == pytest.approx(0.025, abs=1e-9)
    else:
        assert high == 1


@pytest.mark.parametrize("n", [5, 6, 9, 30, 101])
def test_median_interval_is_the_order_statistic_interval(n: int) -> None:
    values = [float(i) for i in range(1, n + 1)]  # x_(i) = i
    low, high = median_interval(values, 0.95)
    j = int(low)
    if n < 6:  # too few values for 95%: the whole range
        assert (low, high) == (1.0, float(n))
        return
    assert high == n - j + 1
    assert _cdf(n, 0.5, j - 1) <= 0.025 < _cdf(n, 0.5, j)  # the largest such j


def test_verdicts_on_the_geometry_fixture(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path, geometry=True)
    df = run_named(open_runs([run]), "geometry_claims", {})
    assert sorted(set(df["claim"])) == ["large_equivalence", "piecewise_linear"]
    assert len(df) == 4  # two models
    first = df[(df["model"] == "vit_a") & (df["claim"] == "large_equivalence")].iloc[0]
    assert first["n"] == 4 and first["estimate"] == pytest.approx(4.5)  # ratios 3, 4, 5, inf
    assert first["verdict"] == "inconclusive" and "below the minimum" in first["reason"]  # n < 30
    lin = df[(df["model"] == "vit_a") & (df["claim"] == "piecewise_linear")].iloc[0]
    assert lin["n"] == 3 and lin["estimate"] == pytest.approx(2 / 3) and lin["probe"] == "equivalence"


def test_supported_and_not_supported_with_enough_pairs() -> None:
    criteria = load_criteria()
    assert large_equivalence_check([3.0] * 40, criteria).verdict == "supported"
    assert large_equivalence_check([1.0] * 40, criteria).verdict == "not_supported"
    assert piecewise_linear_check(50, 50, criteria).verdict == "supported"
    assert piecewise_linear_check(50, 30, criteria).verdict == "not_supported"
    assert piecewise_linear_check(0, 0, criteria).verdict == "inconclusive"
