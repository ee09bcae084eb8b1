"""Verdicts large_equivalence and piecewise_linear (probe `equivalence`) in the named query
`claims`: on the fixture run with equivalence rows, and on synthetic per-pair values where the
verdict is known, through the same checks and exact intervals as every other claim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis.claims import PROBE_CLAIMS, _claim_checks, load_criteria
from analysis.db import open_runs
from analysis.named import run_named
from tests.support.runs import make_fixture_run

CRITERIA = load_criteria()


def _rows(statistic: str, values: list[float]) -> list[dict]:
    """One check's rows as claims.sql hands them over: pairs on distinct images."""
    obs = [{"y": v, "s": f"s{i}", "t": f"t{i}", "p": f"p{i:03d}"} for i, v in enumerate(values)]
    return [{"statistic": statistic, "obs": obs, "n_left_out": 0}]


def test_verdicts_on_the_geometry_fixture(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path, geometry=True)
    df = run_named(open_runs([run]), "claims", {})
    geo = df[df["probe"] == "equivalence"]
    assert sorted(set(geo["claim"])) == ["large_equivalence", "piecewise_linear"] == sorted(PROBE_CLAIMS["equivalence"])
    assert len(geo) == 4  # two models
    first = geo[(geo["model"] == "vit_a") & (geo["claim"] == "large_equivalence")].iloc[0]
    assert first["n"] == 4 and first["estimate"] == pytest.approx(4.5)  # ratios 3, 4, 5, inf
    assert first["verdict"] == "inconclusive" and "below the minimum" in first["reason"]  # n < 30
    lin = geo[(geo["model"] == "vit_a") & (geo["claim"] == "piecewise_linear")].iloc[0]
    assert lin["n"] == 3 and lin["estimate"] == pytest.approx(2 / 3)
    # the Clopper-Pearson interval of 2 of 3, as scipy computes it
    want = stats.binomtest(2, 3).proportion_ci(0.95, method="exact")
    assert (lin["ci_low"], lin["ci_high"]) == pytest.approx((want.low, want.high), abs=1e-12)


def test_large_equivalence_needs_the_median_ratio_above_its_threshold() -> None:
    thr = CRITERIA.large_equivalence.min_median_walk_ratio
    (far,) = _claim_checks("large_equivalence", _rows("median_walk_ratio", [3 * thr] * 40), CRITERIA)
    assert far.verdict == "supported" and far.n == 40 and far.estimate == pytest.approx(3 * thr)
    # a walk no farther than the random one (ratio 1): the negative control's answer
    (same,) = _claim_checks("large_equivalence", _rows("median_walk_ratio", [1.0] * 40), CRITERIA)
    assert same.verdict == "not_supported"
    rng = np.random.default_rng(0)
    (mixed,) = _claim_checks("large_equivalence",
                             _rows("median_walk_ratio", list(thr * np.exp(rng.normal(0, 0.1, 40)))), CRITERIA)
    assert mixed.verdict == "inconclusive"  # an interval around the threshold


def test_piecewise_linear_counts_segments_within_the_tolerance_factor() -> None:
    tol = CRITERIA.piecewise_linear.max_target_over_end
    inside, outside = [0.0, tol / 2, tol] * 20, [tol * 1.01, float("inf")]  # at the factor: linear
    (all_in,) = _claim_checks("piecewise_linear", _rows("linear_rate", inside), CRITERIA)
    assert all_in.verdict == "supported" and all_in.estimate == 1.0 and all_in.n == 60
    (half,) = _claim_checks("piecewise_linear", _rows("linear_rate", inside[:30] + outside * 15), CRITERIA)
    assert half.verdict == "not_supported" and half.estimate == pytest.approx(0.5)
    (empty,) = _claim_checks("piecewise_linear", [], CRITERIA)
    assert empty.verdict == "inconclusive" and empty.n == 0
