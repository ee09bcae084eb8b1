"""The named query `transfer`'s Python step: exact (Clopper-Pearson) intervals of the A x B
target-closer rates, and the claim check "matched images are model-specific".

    finish_named(rows, {"confidence": "0.95"})   # adds ci_low, ci_high to transfer.sql's rows

The interval is scipy's `binomtest(k, n).proportion_ci(confidence, method="exact")` (issue 22's
analysis/intervals.py, once merged, is the one place for it; this module then calls it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa



def exact_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Clopper-Pearson interval of k successes in n trials; (None, None) for n = 0."""
    if n <= 0:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def finish_named(rows: pa.Table, options: Mapping[str, str | None]) -> pa.Table:
    confidence = float(options.get("confidence") or 0.95)
    ci = [exact_interval(k, n, confidence) for k, n in
          zip(rows.column("n_target_closer").to_pylist(), rows.column("n").to_pylist())]
    rows = rows.append_column("ci_low", pa.array([c[0] for c in ci], pa.float64()))
    return rows.append_column("ci_high", pa.array([c[1] for c in ci], pa.float64()))


def model_specific(records: list[dict[str, Any]], threshold: float | None = None,
                   min_n: int | None = None) -> list[dict[str, Any]]:
    """The claim check per off-diagonal (A, B) cell of the finished `transfer` rows: supported
    when the interval's upper end is at or below `threshold`, not supported when its lower end is
    above it, inconclusive otherwise or below `min_n` images."""
    if threshold is None or min_n is None:
        from analysis.claims import load_criteria

        criteria = load_criteria()
        threshold = criteria.transfer.max_target_closer_rate if threshold is None else threshold
        min_n = criteria.min_n_for("transfer") if min_n is None else min_n
    out = []
    for r in records:
        if r["same_setting"]:
            continue
        n, low, high = int(r["n"]), r["ci_low"], r["ci_high"]
        if n < min_n:
            verdict, reason = "inconclusive", f"n = {n} is below the minimum of {min_n}"
        elif high <= threshold:
            verdict, reason = "supported", f"the exact interval [{low:.3g}, {high:.3g}] is at or below {threshold:g}"
        elif low > threshold:
            verdict, reason = "not_supported", f"the exact interval [{low:.3g}, {high:.3g}] is above {threshold:g}"
        else:
            verdict, reason = "inconclusive", f"the exact interval [{low:.3g}, {high:.3g}] contains {threshold:g}"
        out.append({**r, "claim": "model_specific", "threshold": threshold, "verdict": verdict, "reason": reason,
                    "criterion": f"share of A's matched images that B embeds nearer the target than the source ≤ {threshold:g}"})
    return out
