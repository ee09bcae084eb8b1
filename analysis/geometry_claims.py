"""Verdicts on the paper's headline (issue 26), from the `equivalence` probe's rows
(docs/findings.md, "large_equivalence" and "piecewise_linear"):

- `large_equivalence`: per pair, walk_ratio = the reachable radius of the equivalence walk (its
  predictor with J's top subspace removed) over that of the same walk with random predictor
  directions. Check `median_walk_ratio`: the median over pairs, with an exact order-statistic
  interval (ranks from Binomial(n, 1/2)), must reach `min_median_walk_ratio`.
- `piecewise_linear`: per successful match, the segment target -> x_matched stays equivalent
  when its largest deviation ||f(y) - f(tgt)|| is within `max_target_over_end` times the match's
  own tolerance at x_matched (path_target_max <= factor * path_target_end). Check
  `linear_rate`: the share of such pairs, with a Clopper-Pearson interval, must reach
  `min_linear_rate`.

A check is supported when its interval's lower end is at or above the threshold, not_supported
when its upper end is below it, inconclusive otherwise or with fewer than min_n values; a claim
takes the verdict of its one check. The intervals are the small functions `median_interval` and
`rate_interval` (exact, numpy only), to be replaced by analysis.intervals where that exists.
The named query `geometry_claims` (analysis/queries/geometry_claims.sql) gathers the per-pair
values; `finish_named` returns rows of the claims table's schema (analysis.claims.CLAIMS_SCHEMA).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from analysis.claims import (CLAIMS_SCHEMA, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Check, Criteria, load_criteria,
                             num)
from sweep.files import json_safe

GEOMETRY_CLAIMS = ("large_equivalence", "piecewise_linear")


def _log_binom_pmf(n: int, p: float) -> np.ndarray:
    """log P(Bin(n, p) = k) for k = 0..n."""
    k = np.arange(n + 1, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    with np.errstate(divide="ignore"):
        return (lg(n + 1.0) - lg(k + 1) - lg(n - k + 1) + k * (math.log(p) if p > 0 else -np.inf)
                + (n - k) * (math.log1p(-p) if p < 1 else -np.inf))


def _binom_cdf(n: int, p: float) -> np.ndarray:
    """P(Bin(n, p) <= k) for k = 0..n."""
    if p <= 0:
        return np.ones(n + 1)
    if p >= 1:
        out = np.zeros(n + 1)
        out[-1] = 1.0
        return out
    return np.minimum(np.cumsum(np.exp(_log_binom_pmf(n, p))), 1.0)


def median_interval(sorted_values: Sequence[float], confidence: float) -> tuple[float, float]:
    """Exact distribution-free interval for the median: [x_(j), x_(n-j+1)] (1-based order
    statistics) with the largest j such that P(Bin(n, 1/2) <= j - 1) <= (1 - confidence) / 2;
    the whole range [x_(1), x_(n)] where n is too small for that coverage."""
    x = list(sorted_values)
    n = len(x)
    alpha = (1 - confidence) / 2
    cdf = _binom_cdf(n, 0.5)
    below = np.nonzero(cdf <= alpha)[0]  # k with P(B <= k) <= alpha; j - 1 = k
    j = int(below[-1]) + 1 if len(below) else 0
    if j < 1:
        return float(x[0]), float(x[-1])
    return float(x[j - 1]), float(x[n - j])


def rate_interval(n: int, k: int, confidence: float) -> tuple[float, float]:
    """Clopper-Pearson interval for k successes in n trials (bisection on the binomial CDF)."""
    alpha = (1 - confidence) / 2

    def solve(predicate: Any) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if predicate(mid):
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2

    # lower: P(B >= k | p) = alpha, i.e. 1 - cdf(k - 1) rises with p
    low = 0.0 if k == 0 else solve(lambda p: 1 - _binom_cdf(n, p)[k - 1] >= alpha)
    # upper: P(B <= k | p) = alpha, falling with p
    high = 1.0 if k == n else solve(lambda p: _binom_cdf(n, p)[k] <= alpha)
    return low, high


def _judge(statistic: str, criterion: str, threshold: float, n: int, estimate: float | None,
           interval: tuple[float, float] | None, min_n: int, confidence: float, empty: str) -> Check:
    low, high = interval if interval else (None, None)
    pct = f"{100 * confidence:g}%"
    if n == 0:
        verdict, reason = INCONCLUSIVE, f"n = 0: {empty}"
    elif n < min_n:
        verdict, reason = INCONCLUSIVE, f"n = {n} is below the minimum of {min_n}"
    elif low is not None and low >= threshold:
        verdict, reason = SUPPORTED, f"the {pct} interval [{num(low)}, {num(high)}] is at or above {num(threshold)}"
    elif high is not None and high < threshold:
        verdict, reason = NOT_SUPPORTED, f"the {pct} interval [{num(low)}, {num(high)}] is below {num(threshold)}"
    else:
        verdict, reason = INCONCLUSIVE, f"the {pct} interval [{num(low)}, {num(high)}] contains {num(threshold)}"
    return Check(statistic, criterion, float(threshold), int(n), estimate, low, high, verdict, reason)


def large_equivalence_check(ratios: Sequence[float], criteria: Criteria) -> Check:
    """The median walk ratio (sorted per-pair values; +inf where the random walk went nowhere)."""
    c = criteria.large_equivalence
    values = sorted(float(v) for v in ratios)
    n = len(values)
    estimate = float(np.median(values)) if n else None
    interval = median_interval(values, criteria.confidence) if n else None
    return _judge("median_walk_ratio",
                  f"median over pairs of the equivalence walk's reachable radius over the random walk's ≥ {num(c.min_median_walk_ratio)}",
                  c.min_median_walk_ratio, n, estimate, interval, criteria.min_n_for("large_equivalence"),
                  criteria.confidence, "no pair with an equivalence walk")


def piecewise_linear_check(n: int, n_linear: int, criteria: Criteria) -> Check:
    """The share of successful matches whose segment target -> x_matched stays equivalent."""
    c = criteria.piecewise_linear
    estimate = n_linear / n if n else None
    interval = rate_interval(n, n_linear, criteria.confidence) if n else None
    return _judge("linear_rate",
                  (f"share of successful matches whose segment target → x_matched deviates at most "
                   f"{num(c.max_target_over_end)}× the match tolerance ≥ {num(c.min_linear_rate)}"),
                  c.min_linear_rate, n, estimate, interval, criteria.min_n_for("piecewise_linear"),
                  criteria.confidence, "no successful match with path linearity")


def judge_geometry(rows: pa.Table, criteria: Criteria) -> pa.Table:
    """Claims rows (CLAIMS_SCHEMA) from geometry_claims.sql's rows (one per equivalence setting)."""
    out = []
    factor = criteria.piecewise_linear.max_target_over_end
    for r in rows.to_pylist():
        targets = r.get("target_max") or []
        ends = r.get("target_end") or []
        n_path = len(targets)
        n_linear = sum(1 for t, e in zip(targets, ends) if t <= factor * e)
        checks = {"large_equivalence": large_equivalence_check(r.get("ratios") or [], criteria),
                  "piecewise_linear": piecewise_linear_check(n_path, n_linear, criteria)}
        for claim, check in checks.items():
            out.append({
                "model": r["model"], "weights": r["weights"], "embed": r["embed"], "setting": r["setting"],
                "claim": claim, "verdict": check.verdict,
                "criterion": check.criterion + f" (exact {100 * criteria.confidence:g}% interval at or above "
                                               f"its threshold, n ≥ {criteria.min_n_for(claim)})",
                "statistic": check.statistic, "n": check.n, "estimate": check.estimate,
                "ci_low": check.ci_low, "ci_high": check.ci_high, "threshold": check.threshold,
                "reason": f"{check.statistic}: {check.reason}",
                "checks": json.dumps(json_safe([asdict(check)]), ensure_ascii=False, allow_nan=False),
                "probe": "equivalence", "config_hash": r["config_hash"], "params": r.get("params"),
            })
    return pa.Table.from_pylist(out, schema=CLAIMS_SCHEMA)


def finish_named(rows: pa.Table, options: Mapping[str, str | None]) -> pa.Table:
    """The named query `geometry_claims`' Python step: verdicts under the criteria option."""
    return judge_geometry(rows, load_criteria(options.get("criteria")))
