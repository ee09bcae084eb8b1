"""Intervals behind the verdicts: exact where an exact form exists, bootstrap (and labelled so)
only where none does, and counted by image where pairs share images.

    rate_interval(k, n)                        Clopper-Pearson (scipy's exact binomtest interval)
    median_interval(values)                    distribution-free order-statistic interval
    median_ranks(n)                            its ranks (1-based) and exact coverage
    pair_clusters(src_keys, tgt_keys, by)      the independent units when pairs repeat images
    disjoint_pairs(src_keys, tgt_keys)         a set of pairs no two of which share an image
    rate_interval_clustered(outcomes, cl)      a rate counted by cluster
    median_interval_clustered(values, cl)      a median counted by cluster
    ratio_of_medians_interval(num, den, cl)    seeded (cluster) percentile bootstrap
    verdict(ci_low, ci_high, threshold, ">=")  supported / not_supported / inconclusive
    gaussian_reference(d, D, statistic, norm)  what a shape-matched Gaussian map reaches
    decide(interval, threshold, ">=", min_n)   the same with min_n and a one-line reason

No torch, no Ray: numpy and scipy only.

**Rates.** `rate_interval` is the Clopper-Pearson interval, scipy.stats.binomtest(k, n)
.proportion_ci(confidence, method="exact"): each one-sided error is at most (1 - confidence) / 2
for every true rate. 0/n and n/n get a bound short of 0 or 1 on the other side (30/30 at 95%:
[0.884, 1]), never a zero-width interval.

**Medians.** `median_interval` is [x_(l), x_(u)], the l-th and u-th smallest values with
u = n + 1 - l, where l - 1 is the largest j with P(Binomial(n, 1/2) <= j) <= (1 - confidence) / 2.
Then P(x_(l) > m) = P(#{x_i <= m} <= l - 1) <= P(Binomial(n, 1/2) <= l - 1) <= alpha / 2 for the
true median m of any distribution (ties included), and the same on the upper side: coverage is
1 - 2 P(Binomial(n, 1/2) <= l - 1) >= confidence, reported as `coverage`. Where even l = 1 would
break that (n <= 5 at 95%) the interval is unbounded on both sides: (-inf, inf).

**Dependence: count by image.** Pairs that share a source or a target image are not independent
draws. `pair_clusters` turns pairs into independent units in one of these ways, each decided on
the image keys alone (never on the values):

- by="components": clusters are the connected components of the graph whose nodes are image keys
  and whose edges are pairs (source key -- target key); two pairs that share an image, directly
  or through a chain of pairs, are in one cluster, and clusters share no image (a source key
  and a target key that are equal name the same image). Every pair is used;
- by="disjoint": `disjoint_pairs` keeps a greedy set of pairs no two of which share an image (in
  a stated order, e.g. sorted pair ids) and sets the others aside (label -1, `n_set_aside`);
  each kept pair is its own unit, so the exact intervals hold for the kept pairs as they are;
- by="auto": whichever of the two gives more units. Components win where images rarely repeat;
  the disjoint subset wins where the pair graph is dense (random pairings with as many pairs as
  images already form one giant component; `all` and same-class pairings always do);
- by="tgt" / "src": one cluster per target / source key (fixed-target pairings, whose sources
  never repeat).

Over clusters:

- a clustered rate is the mean over clusters of each cluster's share of yes values (each cluster
  weighs one, not its number of pairs); its interval is the Clopper-Pearson form with the
  possibly fractional count s = sum of cluster shares over c = n_clusters trials:
  [B(a/2; s, c - s + 1), B(1 - a/2; s + 1, c - s)] (B(q; a, b) the Beta quantile; 0 and 1 at the
  ends). With one pair per cluster it is exactly `rate_interval`. A cluster's share Y in [0, 1]
  with mean mu is smaller in convex order than a Bernoulli(mu), so the sum of shares is less
  spread than Binomial(c, mu) and the interval is conservative in every case simulated
  (tests/analysis/test_intervals.py); it is not a theorem for every distribution of shares;
- a clustered median is the order-statistic interval over the clusters' medians: exact for the
  median of the distribution of cluster medians (clusters i.i.d.). With one pair per cluster it is
  exactly `median_interval`.

Forty pairs that share one target are one cluster (and one disjoint pair): a rate gets
[0.025, 1] at best and a median an unbounded interval, so a verdict on them is inconclusive,
never that of 40 independent pairs.

**Bootstrap.** Only for statistics with no exact interval (a ratio of two medians): a percentile
bootstrap, seeded, resampling clusters (with their pairs) where clusters are given, and labelled
`method="bootstrap_percentile"` / `"cluster_bootstrap_percentile"`, `bootstrap=True`.

**Verdicts.** For a claim "statistic >= threshold": supported when the whole interval is at or
above the threshold (ci_low >= threshold), not_supported when the whole interval is below it
(ci_high < threshold), inconclusive otherwise, when a bound is missing, or when the number of
independent units (n_clusters where counted by cluster) is below min_n. "<=", ">" and "<" are the
mirror images. With a two-sided interval at confidence 1 - a, a true value on the wrong side of
the threshold is judged supported with probability at most a / 2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from analysis.dependence import PairClusters, disjoint_pairs, pair_clusters  # noqa: F401 (public here too)

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not_supported", "inconclusive"
Verdict = Literal["supported", "not_supported", "inconclusive"]
Direction = Literal[">=", ">", "<=", "<"]
DIRECTIONS: tuple[str, ...] = (">=", ">", "<=", "<")


@dataclass(frozen=True)
class Interval:
    """One statistic with its interval and what stands behind it.

    n is the number of units the interval treats as independent (pairs, or clusters where counted
    by cluster); n_pairs the pairs behind it; n_src, n_tgt the distinct images where keys were
    given (None otherwise); n_left_out the NaN values dropped. ranks: the 1-based order statistics
    used by a median interval (None where unbounded or not a median). coverage: the exact
    guaranteed coverage where one is known (order-statistic intervals), else None."""

    statistic: Literal["rate", "median", "ratio_of_medians"]
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    method: str
    n: int
    n_pairs: int
    n_clusters: int
    n_src: int | None = None
    n_tgt: int | None = None
    n_left_out: int = 0
    n_set_aside: int = 0  # pairs not used so that the used ones share no image (by="disjoint")
    k: float | None = None  # rate: the count of yes values (a sum of cluster shares if clustered)
    ranks: tuple[int, int] | None = None
    coverage: float | None = None
    clustered_by: str | None = None  # None, "components", "disjoint", "src", "tgt" or "labels"
    bootstrap: bool = False
    resamples: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# ---------------------------------------------------------------- rates

def rate_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Clopper-Pearson interval of the rate k/n (k yes values out of n independent trials)."""
    _check_confidence(confidence)
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Interval("rate", None, None, None, confidence, "clopper_pearson", 0, 0, 0, k=0)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return Interval("rate", k / n, float(ci.low), float(ci.high), confidence, "clopper_pearson",
                    n, n, n, k=k)


def _beta_rate_bounds(s: float, c: int, confidence: float) -> tuple[float, float]:
    """Clopper-Pearson's Beta-quantile form at a possibly fractional count s of c trials."""
    a = (1 - confidence) / 2
    low = 0.0 if s <= 0 else float(stats.beta.ppf(a, s, c - s + 1))
    high = 1.0 if s >= c else float(stats.beta.ppf(1 - a, s + 1, c - s))
    return low, high


# ---------------------------------------------------------------- medians

@functools.lru_cache(maxsize=4096)
def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, int, float] | None:
    """(l, u, coverage): 1-based ranks of the order-statistic interval [x_(l), x_(u)] for the
    median of n values, u = n + 1 - l, l - 1 the largest j with P(Binomial(n, 1/2) <= j) <=
    (1 - confidence) / 2, coverage = 1 - 2 P(Binomial(n, 1/2) <= l - 1) (exact, >= confidence).
    None where no such l >= 1 exists (the interval is then unbounded)."""
    _check_confidence(confidence)
    n = int(n)
    if n < 1:
        return None
    a = (1 - confidence) / 2
    j = int(stats.binom.ppf(a, n, 0.5))  # smallest j with cdf(j) >= a
    tol = 1e-12
    while j >= 0 and stats.binom.cdf(j, n, 0.5) > a * (1 + tol):
        j -= 1
    while stats.binom.cdf(j + 1, n, 0.5) <= a * (1 + tol):  # guard against ppf rounding
        j += 1
    if j < 0:
        return None
    l = j + 1
    return l, n + 1 - l, float(1 - 2 * stats.binom.cdf(j, n, 0.5))


def _finite_mask(values: np.ndarray) -> np.ndarray:
    return ~np.isnan(values)


def _order_statistic_interval(sorted_values: np.ndarray, confidence: float
                              ) -> tuple[float, float, tuple[int, int] | None, float | None]:
    n = len(sorted_values)
    ranks = median_ranks(n, confidence)
    if ranks is None:
        return -math.inf, math.inf, None, 1.0
    l, u, coverage = ranks
    return float(sorted_values[l - 1]), float(sorted_values[u - 1]), (l, u), coverage


def median_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Order-statistic interval for the median of independent values (NaN left out)."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = _finite_mask(x)
    x = np.sort(x[keep])
    n, left_out = len(x), int((~keep).sum())
    if n == 0:
        return Interval("median", None, None, None, confidence, "order_statistic", 0, 0, 0,
                        n_left_out=left_out)
    low, high, ranks, coverage = _order_statistic_interval(x, confidence)
    return Interval("median", float(np.median(x)), low, high, confidence, "order_statistic",
                    n, n, n, n_left_out=left_out, ranks=ranks, coverage=coverage)


def _as_clusters(clusters: PairClusters | Sequence[int] | np.ndarray, n: int) -> PairClusters:
    if isinstance(clusters, PairClusters):
        if clusters.n_pairs != n:
            raise ValueError(f"{n} values but clusters of {clusters.n_pairs} pairs")
        return clusters
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"{n} values but {labels.size} cluster labels")
    dense = np.full(n, -1, dtype=np.int64)  # negative labels: pairs set aside
    used = labels >= 0
    _, dense[used] = np.unique(labels[used], return_inverse=True)
    return PairClusters(dense, n, None, None, int(dense.max()) + 1 if used.any() else 0,
                        "labels", n_set_aside=int((~used).sum()))


def _common(cl: PairClusters, left_out: int) -> dict:
    return dict(n_src=cl.n_src, n_tgt=cl.n_tgt, n_left_out=left_out, clustered_by=cl.by,
                n_set_aside=cl.n_set_aside)


def _kept(values: np.ndarray, cl: PairClusters) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Values and dense cluster labels without NaN values and set-aside pairs (label -1);
    (values, labels, n_clusters, NaN values left out among the pairs used)."""
    used = cl.labels >= 0
    finite = _finite_mask(values)
    keep = used & finite
    _, labels = np.unique(cl.labels[keep], return_inverse=True)
    c = int(labels.max()) + 1 if labels.size else 0
    return values[keep], labels.astype(np.int64), c, int((used & ~finite).sum())


def rate_interval_clustered(outcomes: Sequence[float] | np.ndarray,
                            clusters: PairClusters | Sequence[int] | np.ndarray,
                            confidence: float = 0.95) -> Interval:
    """A rate counted by cluster: the mean of the clusters' shares of yes values, with the
    Clopper-Pearson form at s = sum of shares out of n_clusters (see the module docstring).
    outcomes: yes/no per pair (bool, 0/1; NaN = no value, left out)."""
    _check_confidence(confidence)
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    cl = _as_clusters(clusters, len(y))
    y, labels, c, left_out = _kept(y, cl)
    if np.any((y != 0) & (y != 1)):
        raise ValueError("outcomes must be yes/no (0/1)")
    common = _common(cl, left_out)
    if c == 0:
        return Interval("rate", None, None, None, confidence, "clopper_pearson_by_cluster",
                        0, 0, 0, k=0.0, **common)
    sizes = np.bincount(labels, minlength=c)
    shares = np.bincount(labels, weights=y, minlength=c) / sizes
    s = float(shares.sum())
    low, high = _beta_rate_bounds(s, c, confidence)
    return Interval("rate", s / c, low, high, confidence, "clopper_pearson_by_cluster",
                    c, len(y), c, k=s, **common)


def median_interval_clustered(values: Sequence[float] | np.ndarray,
                              clusters: PairClusters | Sequence[int] | np.ndarray,
                              confidence: float = 0.95) -> Interval:
    """A median counted by cluster: each cluster's median, then the order-statistic interval
    over the n_clusters cluster medians (estimate: their median). NaN values are left out."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    cl = _as_clusters(clusters, len(x))
    x, labels, c, left_out = _kept(x, cl)
    common = _common(cl, left_out)
    if c == 0:
        return Interval("median", None, None, None, confidence, "order_statistic_by_cluster",
                        0, 0, 0, **common)
    meds = np.sort(_group_medians(x, labels, c))
    low, high, ranks, coverage = _order_statistic_interval(meds, confidence)
    return Interval("median", float(np.median(meds)), low, high, confidence,
                    "order_statistic_by_cluster", c, len(x), c, ranks=ranks, coverage=coverage,
                    **common)


def _group_medians(x: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Median of x within each label 0..c-1 (the mean of the two middle values for even sizes)."""
    if len(x) == c:  # every label once: each value is its own median
        out = np.empty(c, dtype=np.float64)
        out[labels] = x
        return out
    order = np.lexsort((x, labels))
    xs, ls = x[order], labels[order]
    sizes = np.bincount(ls, minlength=c)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    lo = starts + (sizes - 1) // 2
    hi = starts + sizes // 2
    return (xs[lo] + xs[hi]) / 2


# ---------------------------------------------------------------- bootstrap (ratios)

def _weighted_medians(sorted_x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise median of sorted_x (n,) under weights (B, n): the mean of the lower and upper
    weighted medians (the ordinary median when all weights are 1)."""
    cum = np.cumsum(weights, axis=1)
    half = cum[:, -1:] / 2
    lo = np.argmax(cum >= half, axis=1)
    hi = np.argmax(cum > half, axis=1)
    return (sorted_x[lo] + sorted_x[hi]) / 2


def ratio_of_medians_interval(numerator: Sequence[float] | np.ndarray,
                              denominator: Sequence[float] | np.ndarray,
                              clusters: PairClusters | Sequence[int] | np.ndarray | None = None,
                              confidence: float = 0.95, resamples: int = 4000,
                              seed: int = 0) -> Interval:
    """median(numerator) / median(denominator) with a seeded percentile bootstrap (there is no
    exact interval for a ratio of medians). Both arrays are per pair (same length; a pair with a
    NaN in either is left out). With clusters, whole clusters are resampled (cluster bootstrap);
    without, pairs are. Labelled bootstrap=True with its method, resamples and seed."""
    _check_confidence(confidence)
    num = np.asarray(numerator, dtype=np.float64).ravel()
    den = np.asarray(denominator, dtype=np.float64).ravel()
    if num.shape != den.shape:
        raise ValueError(f"{num.size} numerator values but {den.size} denominator values")
    n_all = len(num)
    cl = _as_clusters(clusters if clusters is not None else np.arange(n_all), n_all)
    used = cl.labels >= 0
    finite = _finite_mask(num) & _finite_mask(den)
    keep = used & finite
    num, den = num[keep], den[keep]
    _, labels = np.unique(cl.labels[keep], return_inverse=True)
    c = int(labels.max()) + 1 if labels.size else 0
    method = "cluster_bootstrap_percentile" if clusters is not None else "bootstrap_percentile"
    common = dict(n_src=cl.n_src, n_tgt=cl.n_tgt, n_left_out=int((used & ~finite).sum()),
                  clustered_by=cl.by if clusters is not None else None, bootstrap=True,
                  resamples=int(resamples), seed=int(seed), n_set_aside=cl.n_set_aside)
    if c == 0:
        return Interval("ratio_of_medians", None, None, None, confidence, method, 0, 0, 0,
                        **common)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = float(np.median(num) / np.median(den))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(c, np.full(c, 1 / c), size=int(resamples))  # (B, c) cluster draws
    weights = counts[:, labels].astype(np.float64)  # (B, n) each pair weighs its cluster's count
    on, od = np.argsort(num, kind="stable"), np.argsort(den, kind="stable")
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = _weighted_medians(num[on], weights[:, on]) / _weighted_medians(den[od], weights[:, od])
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        low = high = None
    else:
        a = (1 - confidence) / 2
        low, high = (float(v) for v in np.quantile(reps, [a, 1 - a], method="inverted_cdf"))
    return Interval("ratio_of_medians", estimate, low, high, confidence, method, c, len(num), c,
                    **common)


# ---------------------------------------------------------------- verdicts

def verdict(ci_low: float | None, ci_high: float | None, threshold: float,
            direction: Direction = ">=", n: int | None = None, min_n: int | None = None
            ) -> Verdict:
    """supported when the whole interval is on the claimed side of the threshold (">=": ci_low >=
    threshold; ">": ci_low > threshold; "<=", "<" mirrored), not_supported when the whole interval
    is on the other side, inconclusive otherwise, when a bound is missing or NaN, or when
    n < min_n."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if min_n is not None and (n is None or n < min_n):
        return INCONCLUSIVE
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    if direction == ">=":
        ok, bad = ci_low >= threshold, ci_high < threshold
    elif direction == ">":
        ok, bad = ci_low > threshold, ci_high <= threshold
    elif direction == "<=":
        ok, bad = ci_high <= threshold, ci_low > threshold
    else:
        ok, bad = ci_high < threshold, ci_low >= threshold
    return SUPPORTED if ok else NOT_SUPPORTED if bad else INCONCLUSIVE


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.3g}"


def decide(interval: Interval, threshold: float, direction: Direction = ">=",
           min_n: int = 1) -> Decision:
    """The verdict of one interval against a threshold, with a one-line reason. min_n counts
    the interval's independent units (n: clusters where counted by cluster)."""
    pct = f"{100 * interval.confidence:g}%"
    kind = "bootstrap " if interval.bootstrap else ""
    units = "clusters" if interval.clustered_by else "values"
    if interval.n == 0:
        return Decision(INCONCLUSIVE, "n = 0: no values")
    if interval.n < min_n:
        return Decision(INCONCLUSIVE, f"n = {interval.n} {units} is below the minimum of {min_n}")
    v = verdict(interval.ci_low, interval.ci_high, threshold, direction)
    span = f"the {pct} {kind}interval [{_num(interval.ci_low)}, {_num(interval.ci_high)}]"
    side = {">=": "at or above", ">": "above", "<=": "at or below", "<": "below"}[direction]
    if v == SUPPORTED:
        return Decision(v, f"{span} is {side} {_num(threshold)}")
    if v == NOT_SUPPORTED:
        return Decision(v, f"{span} is not {side} {_num(threshold)} anywhere")
    return Decision(v, f"{span} reaches across {_num(threshold)}")


# ---------------------------------------------------------------- Gaussian control references

def gaussian_reference(d: int, D: int, statistic: str, norm: str | None = None) -> float | None:
    """What a Gaussian D x d linear map (i.i.d. entries) reaches on a ratio statistic, to first
    order (Bai-Yin: sigma_1 ~= s (sqrt(d) + sqrt(D)); a random unit direction: ||W v|| ~= s sqrt(D)):

    - "sigma1_over_random": 1 + sqrt(d / D)  (15.0 for ViT-B/16: d = 150528, D = 768);
    - "over_random" with norm "l2": the same (PGD in an L2 ball reaches sigma_1 eps, before any
      [0, 1] clamping);
    - "over_random" with norm "linf": None. The best sign vector reaches at least
      eps s d sqrt(2/pi) against eps s sqrt(d D) for random signs, a lower bound of
      sqrt(2 d / (pi D)) (`gaussian_linf_lower_bound`), not a value: run the control.
    """
    if d < 1 or D < 1:
        raise ValueError(f"need d, D >= 1, got d={d}, D={D}")
    if statistic == "sigma1_over_random" or (statistic == "over_random" and norm == "l2"):
        return 1 + math.sqrt(d / D)
    if statistic == "over_random" and norm == "linf":
        return None
    raise ValueError(f"no Gaussian reference for {statistic!r} (norm {norm!r})")


def gaussian_linf_lower_bound(d: int, D: int) -> float:
    """A lower bound (to first order) of a Gaussian map's L-inf over_random: sqrt(2 d / (pi D))."""
    return math.sqrt(2 * d / (math.pi * D))
