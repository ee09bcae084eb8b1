"""analysis/intervals.py: exact values against independent computations, the verdict rule, the
dependence rule (count by image) and a simulation of every interval's false-`supported` rate."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from analysis.intervals import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Interval,
    decide,
    disjoint_pairs,
    median_interval,
    median_interval_clustered,
    median_ranks,
    pair_clusters,
    rate_interval,
    rate_interval_clustered,
    ratio_of_medians_interval,
    verdict,
)

CONF = 0.95
ALPHA = 1 - CONF


# ---------------------------------------------------------------- rates

@pytest.mark.parametrize("n", [1, 2, 7, 30, 31, 50, 100, 1000])
def test_clopper_pearson_matches_beta_quantiles(n):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
        got = rate_interval(k, n, CONF)
        low = 0.0 if k == 0 else stats.beta.ppf(ALPHA / 2, k, n - k + 1)
        high = 1.0 if k == n else stats.beta.ppf(1 - ALPHA / 2, k + 1, n - k)
        assert got.ci_low == pytest.approx(low, abs=1e-9)
        assert got.ci_high == pytest.approx(high, abs=1e-9)
        assert got.estimate == k / n and got.n == n and got.method == "clopper_pearson"
        assert not got.bootstrap


def test_clopper_pearson_known_values():
    # 29/30: lower bound 0.828 (the number), 30/30: lower bound (alpha/2)^(1/30)
    assert rate_interval(29, 30).ci_low == pytest.approx(0.827830, abs=1e-6)
    full = rate_interval(30, 30)
    assert full.ci_low == pytest.approx(0.025 ** (1 / 30), rel=1e-9)
    assert (full.ci_low, full.ci_high) != (1.0, 1.0) and full.ci_low < 0.9
    assert rate_interval(0, 30).ci_high == pytest.approx(1 - 0.025 ** (1 / 30), rel=1e-9)


def test_29_of_30_at_0_9_is_inconclusive():
    got = rate_interval(29, 30)
    assert verdict(got.ci_low, got.ci_high, 0.9, ">=") == INCONCLUSIVE
    assert decide(got, 0.9, ">=", min_n=30).verdict == INCONCLUSIVE
    # 30/30 is not enough either: its lower bound 0.884 is below 0.9
    full = rate_interval(30, 30)
    assert verdict(full.ci_low, full.ci_high, 0.9) == INCONCLUSIVE


def test_rate_edge_cases():
    empty = rate_interval(0, 0)
    assert empty.estimate is None and empty.ci_low is None and empty.n == 0
    assert decide(empty, 0.5).verdict == INCONCLUSIVE
    with pytest.raises(ValueError):
        rate_interval(3, 2)
    with pytest.raises(ValueError):
        rate_interval(1, 2, confidence=1.0)


# ---------------------------------------------------------------- medians

def _ranks_by_binomial_sums(n: int, confidence: float):
    """Largest l with sum_{i<l} C(n, i) / 2^n <= (1 - confidence)/2, in exact fractions."""
    a = Fraction(1 - confidence).limit_denominator(10**9) / 2
    total, l = Fraction(0), 0
    while l < n:
        nxt = total + Fraction(math.comb(n, l), 2**n)
        if nxt > a:
            break
        total, l = nxt, l + 1
    if l == 0:
        return None
    return l, n + 1 - l, float(1 - 2 * total)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_median_ranks_match_direct_binomial_sums(confidence):
    for n in range(1, 201):
        want = _ranks_by_binomial_sums(n, confidence)
        got = median_ranks(n, confidence)
        if want is None:
            assert got is None, n
            continue
        assert got[:2] == want[:2], n
        assert got[2] == pytest.approx(want[2], abs=1e-12)
        assert got[2] >= confidence


def test_median_ranks_stated_values():
    assert median_ranks(5) is None and median_ranks(6)[:2] == (1, 6)
    assert median_ranks(30)[:2] == (10, 21)
    assert median_ranks(31)[:2] == (10, 22)
    assert median_ranks(50)[:2] == (18, 33)
    assert median_ranks(100)[:2] == (40, 61)


def test_median_interval_is_the_order_statistics():
    rng = np.random.default_rng(3)
    for n in (6, 30, 31, 50, 100):
        x = rng.normal(size=n)
        got = median_interval(x)
        l, u, cov = median_ranks(n)
        s = np.sort(x)
        assert (got.ci_low, got.ci_high) == (s[l - 1], s[u - 1])
        assert got.ranks == (l, u) and got.coverage == cov
        assert got.estimate == np.median(x) and got.method == "order_statistic"


def test_median_interval_small_n_and_nan():
    got = median_interval([1.0, 2.0, 3.0])
    assert got.ci_low == -math.inf and got.ci_high == math.inf and got.ranks is None
    assert verdict(got.ci_low, got.ci_high, 0.0) == INCONCLUSIVE
    got = median_interval([np.nan] * 3 + list(range(30)))
    assert got.n == 30 and got.n_left_out == 3
    assert median_interval([]).estimate is None


# ---------------------------------------------------------------- dependence

def test_pair_clusters_components():
    # (a,b) and (b,x) share b; (c,y) and (d,y) share y; (e,f) alone; a source equal to a
    # target key is the same image
    cl = pair_clusters(["a", "b", "c", "d", "e", "g"], ["b", "x", "y", "y", "f", "a"])
    assert cl.labels.tolist() == [0, 0, 1, 1, 2, 0]
    assert (cl.n_pairs, cl.n_src, cl.n_tgt, cl.n_clusters) == (6, 6, 5, 3)
    by_tgt = pair_clusters(["a", "b", "c", "d"], ["t", "t", "u", "t"], by="tgt")
    assert by_tgt.labels.tolist() == [0, 0, 1, 0] and by_tgt.n_clusters == 2
    missing = pair_clusters([None, None, "a"], [None, "t", "t"])
    assert missing.n_clusters == 2  # missing keys are images seen nowhere else
    with pytest.raises(ValueError):
        pair_clusters(["a"], ["b", "c"])


def test_disjoint_pairs_and_auto():
    # every ordered pair of 10 images (an `all` pairing) is one component, but 5 pairs share
    # no image
    images = [f"i{j}" for j in range(10)]
    src = [a for a in images for b in images if a != b]
    tgt = [b for a in images for b in images if a != b]
    assert pair_clusters(src, tgt).n_clusters == 1
    keep = disjoint_pairs(src, tgt)
    kept = [(src[i], tgt[i]) for i in np.flatnonzero(keep)]
    assert len(kept) == 5 and len({k for pair in kept for k in pair}) == 10
    auto = pair_clusters(src, tgt, by="auto")
    assert auto.by == "disjoint" and auto.n_clusters == 5 and auto.n_set_aside == 85
    assert (auto.labels >= 0).sum() == 5
    # the interval over the kept pairs is the exact one of those pairs
    y = np.array([(i * 7) % 3 != 0 for i in range(len(src))], dtype=float)
    got = rate_interval_clustered(y, auto)
    want = rate_interval(int(y[keep].sum()), 5)
    assert (got.ci_low, got.ci_high) == pytest.approx((want.ci_low, want.ci_high), abs=1e-12)
    assert got.n == 5 and got.n_pairs == 5 and got.n_set_aside == 85
    # an order changes which pairs are kept, not how many here
    order = np.random.default_rng(0).permutation(len(src))
    assert disjoint_pairs(src, tgt, order).sum() >= 3
    # sparse pairs over many images: components (every pair used) win
    rng = np.random.default_rng(1)
    s2, t2 = rng.choice(10_000, 40, replace=False), rng.choice(10_000, 40, replace=False) + 10_000
    assert pair_clusters(s2.tolist(), t2.tolist(), by="auto").by == "components"
    # raw labels with -1: set aside
    med = median_interval_clustered([1.0, 2.0, 3.0, 100.0], [0, 1, 2, -1])
    assert med.n == 3 and med.n_set_aside == 1 and med.estimate == 2.0


def test_clustered_reduces_to_exact_with_distinct_images():
    rng = np.random.default_rng(4)
    n = 37
    cl = pair_clusters([f"s{i}" for i in range(n)], [f"t{i}" for i in range(n)])
    y = rng.random(n) < 0.7
    a, b = rate_interval_clustered(y, cl), rate_interval(int(y.sum()), n)
    assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high), abs=1e-12)
    assert a.n_clusters == n and a.method == "clopper_pearson_by_cluster"
    x = rng.normal(size=n)
    a, b = median_interval_clustered(x, cl), median_interval(x)
    assert (a.ci_low, a.ci_high, a.ranks) == (b.ci_low, b.ci_high, b.ranks)


def test_forty_pairs_sharing_one_target_are_inconclusive():
    src = [f"src{i}" for i in range(40)]
    tgt = ["the_target"] * 40
    yes = np.ones(40)
    values = np.linspace(40.0, 50.0, 40)  # e.g. PSNRs, all far above a 30 dB threshold
    # counted as 40 independent pairs it would be supported ...
    naive = rate_interval(40, 40)
    assert verdict(naive.ci_low, naive.ci_high, 0.9) == SUPPORTED
    naive_m = median_interval(values)
    assert verdict(naive_m.ci_low, naive_m.ci_high, 30.0) == SUPPORTED
    # ... but it is one cluster
    for by in ("components", "tgt", "disjoint", "auto"):
        cl = pair_clusters(src, tgt, by=by)
        assert (cl.n_pairs, cl.n_src, cl.n_tgt, cl.n_clusters) == (40, 40, 1, 1)
        rate = rate_interval_clustered(yes, cl)
        assert rate.n == 1 and rate.ci_low == pytest.approx(0.025)
        assert rate.n_pairs == (1 if by == "disjoint" else 40)
        assert decide(rate, 0.9, min_n=1).verdict == INCONCLUSIVE
        assert decide(rate, 0.9, min_n=30).verdict == INCONCLUSIVE
        med = median_interval_clustered(values, cl)
        assert med.n == 1 and decide(med, 30.0, min_n=1).verdict == INCONCLUSIVE


def test_clustered_counts_and_nan():
    cl = pair_clusters(["a", "b", "c", "d"], ["t", "t", "u", "v"])
    got = rate_interval_clustered([1, 0, 1, np.nan], cl)
    # clusters {a,b}: share 0.5, {c}: 1; {d} has no value
    assert (got.n, got.n_pairs, got.n_left_out) == (2, 3, 1)
    assert got.estimate == pytest.approx(0.75) and got.k == pytest.approx(1.5)
    assert (got.n_src, got.n_tgt) == (4, 3)
    with pytest.raises(ValueError):
        rate_interval_clustered([0.5, 1, 1, 1], cl)
    med = median_interval_clustered([1.0, 3.0, 5.0, 7.0], [0, 0, 1, 2])
    assert med.estimate == 5.0 and med.n == 3


# ---------------------------------------------------------------- bootstrap

def test_ratio_of_medians_bootstrap_is_seeded_and_labelled():
    rng = np.random.default_rng(5)
    num, den = rng.lognormal(1.0, 0.5, 60), rng.lognormal(0.0, 0.5, 60)
    a = ratio_of_medians_interval(num, den, seed=7, resamples=2000)
    b = ratio_of_medians_interval(num, den, seed=7, resamples=2000)
    c = ratio_of_medians_interval(num, den, seed=8, resamples=2000)
    assert a == b and (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.bootstrap and a.method == "bootstrap_percentile" and a.seed == 7
    assert a.estimate == pytest.approx(np.median(num) / np.median(den))
    assert a.ci_low < a.estimate < a.ci_high
    cl = pair_clusters([f"s{i}" for i in range(60)], [f"t{i // 6}" for i in range(60)])
    d = ratio_of_medians_interval(num, den, cl, seed=7, resamples=2000)
    assert d.method == "cluster_bootstrap_percentile" and d.n == 10 and d.n_pairs == 60
    assert d.bootstrap and "bootstrap" in decide(d, 1.0).reason
    one = ratio_of_medians_interval(num[:40], den[:40], pair_clusters(range(40), [0] * 40))
    assert one.n == 1 and decide(one, 0.5, min_n=30).verdict == INCONCLUSIVE


# ---------------------------------------------------------------- verdicts

@pytest.mark.parametrize("low, high, thr, direction, want", [
    (0.91, 0.99, 0.9, ">=", SUPPORTED),
    (0.90, 0.99, 0.9, ">=", SUPPORTED),
    (0.89, 0.99, 0.9, ">=", INCONCLUSIVE),
    (0.50, 0.89, 0.9, ">=", NOT_SUPPORTED),
    (0.50, 0.90, 0.9, ">=", INCONCLUSIVE),
    (0.90, 0.99, 0.9, ">", INCONCLUSIVE),
    (0.50, 0.90, 0.9, ">", NOT_SUPPORTED),
    (0.10, 0.40, 0.5, "<=", SUPPORTED),
    (0.10, 0.50, 0.5, "<=", SUPPORTED),
    (0.10, 0.50, 0.5, "<", INCONCLUSIVE),
    (0.60, 0.70, 0.5, "<=", NOT_SUPPORTED),
    (0.50, 0.70, 0.5, "<", NOT_SUPPORTED),
    (None, 0.70, 0.5, ">=", INCONCLUSIVE),
    (float("nan"), 0.70, 0.5, ">=", INCONCLUSIVE),
    (-math.inf, math.inf, 0.5, ">=", INCONCLUSIVE),
])
def test_verdict_rule(low, high, thr, direction, want):
    assert verdict(low, high, thr, direction) == want


def test_verdict_min_n():
    assert verdict(0.95, 0.99, 0.9, ">=", n=29, min_n=30) == INCONCLUSIVE
    assert verdict(0.95, 0.99, 0.9, ">=", n=30, min_n=30) == SUPPORTED
    assert verdict(0.95, 0.99, 0.9, ">=", min_n=30) == INCONCLUSIVE
    got = decide(rate_interval(20, 20), 0.5, min_n=30)
    assert got.verdict == INCONCLUSIVE and "below the minimum of 30" in got.reason
    with pytest.raises(ValueError):
        verdict(0.1, 0.2, 0.5, "=>")


def test_interval_is_a_small_dataclass():
    got = rate_interval(3, 10)
    assert isinstance(got, Interval)
    assert {"estimate", "ci_low", "ci_high", "method", "n", "n_clusters", "n_pairs"} <= set(
        got.__dataclass_fields__)


# ---------------------------------------------------------------- simulation

SIM_N = (30, 31, 50, 100)
REPS = 20_000
# nominal one-sided error of a 95% two-sided interval, plus 3 Monte-Carlo standard errors
LIMIT = ALPHA / 2 + 3 * math.sqrt(ALPHA / 2 * (1 - ALPHA / 2) / REPS)
SIM_RATES: dict[str, dict[int, float]] = {}


def _record(kind: str, n: int, rate: float) -> None:
    SIM_RATES.setdefault(kind, {})[n] = rate
    print(f"false supported {kind} n={n}: {rate:.4f} (limit {LIMIT:.4f})")


def _sizes(c: int) -> np.ndarray:
    return np.arange(c) % 4 + 1  # clusters of 1, 2, 3, 4 pairs (fixed-target style)


def _fixed_target_clusters(c: int):
    sizes = _sizes(c)
    tgt = np.repeat(np.arange(c), sizes)
    return pair_clusters([f"s{i}" for i in range(len(tgt))], [f"t{j}" for j in tgt]), tgt


@pytest.mark.parametrize("n", SIM_N)
def test_simulated_false_supported_rate(n):
    rng = np.random.default_rng(1000 + n)

    # rate, true value just below the threshold: the lower bound of every k from rate_interval
    # (at 0.9 and n <= 31 not even n/n is supported; 0.5 is reachable at every n)
    for thr in (0.5, 0.9):
        lows = np.array([rate_interval(k, n).ci_low for k in range(n + 1)])
        k = rng.binomial(n, thr - 1e-3, size=REPS)
        rate = float(np.mean(lows[k] >= thr))
        _record(f"rate@{thr}", n, rate)
        assert rate <= LIMIT

    # median: normal values whose true median is just below the threshold
    thr_m = 0.0
    x = np.sort(rng.normal(thr_m - 1e-3, 1.0, size=(REPS, n)), axis=1)
    l, _, _ = median_ranks(n)
    for i in range(50):  # the vectorised lower bound is median_interval's
        assert median_interval(x[i]).ci_low == x[i, l - 1]
    rate = float(np.mean(x[:, l - 1] >= thr_m))
    _record("median", n, rate)
    assert rate <= LIMIT

    # clustered rate: n clusters of 1-4 pairs sharing a target, correlated within a cluster
    # (cluster success probability ~ Beta with mean just below the threshold; kappa = 0.5 is
    # nearly all-or-nothing per cluster, 5 is milder)
    cl, tgt = _fixed_target_clusters(n)
    sizes = _sizes(n)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    m = len(tgt)
    naive_lows = np.array([rate_interval(j, m).ci_low for j in range(m + 1)])
    for thr, kappa in ((0.5, 0.5), (0.5, 5.0), (0.9, 0.5), (0.9, 5.0)):
        mu = thr - 1e-3
        p = rng.beta(mu * kappa, (1 - mu) * kappa, size=(REPS, n))
        y = (rng.random((REPS, m)) < p[:, tgt]).astype(np.float64)
        s = (np.add.reduceat(y, starts, axis=1) / sizes).sum(axis=1)
        low = np.where(s <= 0, 0.0, stats.beta.ppf(ALPHA / 2, np.maximum(s, 1e-300), n - s + 1))
        for i in range(20):  # the vectorised lower bound is rate_interval_clustered's
            assert rate_interval_clustered(y[i], cl).ci_low == pytest.approx(low[i], abs=1e-12)
        rate = float(np.mean(low >= thr))
        _record(f"rate_clustered@{thr},kappa={kappa}", n, rate)
        assert rate <= LIMIT
        # the same data counted as independent pairs is over-confident (why clusters count)
        naive = float(np.mean(naive_lows[y.sum(axis=1).astype(int)] >= thr))
        _record(f"rate_counted_by_pair@{thr},kappa={kappa}", n, naive)
        if kappa == 0.5:
            assert naive > LIMIT

    # clustered median: cluster effect + pair noise; cluster medians are symmetric about the
    # true median, set just below the threshold
    u = rng.normal(size=(REPS, n))
    vals = u[:, tgt] + rng.normal(size=(REPS, len(tgt))) + thr_m - 1e-3
    meds = np.empty((REPS, n))
    for size in (1, 2, 3, 4):
        cols = np.flatnonzero(sizes == size)
        idx = starts[cols][:, None] + np.arange(size)
        meds[:, cols] = np.median(vals[:, idx], axis=2)
    meds.sort(axis=1)
    for i in range(50):
        assert median_interval_clustered(vals[i], cl).ci_low == meds[i, l - 1]
    rate = float(np.mean(meds[:, l - 1] >= thr_m))
    _record("median_clustered", n, rate)
    assert rate <= LIMIT


@pytest.mark.parametrize("n", SIM_N)
def test_simulated_false_supported_rate_disjoint_subset(n):
    """An `all` pairing over 2n images with source and target image effects: by="auto" keeps n
    image-disjoint pairs, whose outcomes are then independent; rate (thresholds 0.5 and 0.9)
    and median, true values just below the threshold."""
    rng = np.random.default_rng(2000 + n)
    m = 2 * n
    src_i, tgt_i = np.nonzero(~np.eye(m, dtype=bool))
    cl = pair_clusters(src_i.tolist(), tgt_i.tolist(), by="auto")
    assert cl.by == "disjoint" and cl.n_clusters == n
    kept = np.flatnonzero(cl.labels >= 0)
    ks, kt = src_i[kept], tgt_i[kept]
    l, _, _ = median_ranks(n)
    # latent value per pair = source effect + target effect + noise, N(0, 3) overall
    for thr in (0.5, 0.9):
        q = math.sqrt(3) * stats.norm.ppf(1 - (thr - 1e-3))  # P(latent > q) just below thr
        lows = np.array([rate_interval(k, n).ci_low for k in range(n + 1)])
        lat = rng.normal(size=(REPS, m))[:, ks] + rng.normal(size=(REPS, m))[:, kt] \
            + rng.normal(size=(REPS, n))
        k = (lat > q).sum(axis=1)
        rate = float(np.mean(lows[k] >= thr))
        _record(f"rate_disjoint@{thr}", n, rate)
        assert rate <= LIMIT
    meds = np.sort(lat, axis=1)[:, l - 1]  # median of the latent values, true median 0
    rate = float(np.mean(meds - 1e-3 >= 0.0))
    _record("median_disjoint", n, rate)
    assert rate <= LIMIT
    # the function on every pair (set-aside ones included) gives these numbers
    for _ in range(3):
        a, b = rng.normal(size=m), rng.normal(size=m)
        full = a[src_i] + b[tgt_i] + rng.normal(size=len(src_i))
        got = median_interval_clustered(full, cl)
        assert got.ci_low == np.sort(full[kept])[l - 1] and got.n == n
        y = (full > 0).astype(float)
        got = rate_interval_clustered(y, cl)
        assert got.ci_low == pytest.approx(rate_interval(int(y[kept].sum()), n).ci_low, abs=1e-12)


def test_gaussian_reference_against_a_gaussian_matrix():
    from analysis.intervals import gaussian_linf_lower_bound, gaussian_reference

    assert gaussian_reference(150528, 768, "sigma1_over_random") == pytest.approx(15.0)
    assert gaussian_reference(192, 16, "over_random", "l2") == pytest.approx(1 + math.sqrt(12))
    assert gaussian_reference(192, 16, "over_random", "linf") is None
    with pytest.raises(ValueError):
        gaussian_reference(192, 16, "median_psnr")
    rng = np.random.default_rng(0)
    d, D = 3 * 32 * 32, 48
    w = rng.normal(size=(D, d)) / math.sqrt(d)
    sigma1 = np.linalg.svd(w, compute_uv=False)[0]
    v = rng.normal(size=(d, 200))
    random = np.median(np.linalg.norm(w @ (v / np.linalg.norm(v, axis=0)), axis=0))
    assert sigma1 / random == pytest.approx(gaussian_reference(d, D, "sigma1_over_random"), rel=0.1)
    # L-inf: the sign of the top left singular direction's pull-back already beats the bound
    signs = np.sign(w.T @ np.linalg.svd(w, full_matrices=False)[0][:, 0])
    s = rng.choice([-1.0, 1.0], size=(d, 200))
    ratio = np.linalg.norm(w @ signs) / np.median(np.linalg.norm(w @ s, axis=0))
    assert ratio >= 0.95 * gaussian_linf_lower_bound(d, D)


def _reference_components(src: list, tgt: list) -> list[int]:
    """A plain union-find over image keys, labels in order of first appearance."""
    parent: dict = {}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    nodes = []
    for i, (s, t) in enumerate(zip(src, tgt)):
        a = ("img", s) if s is not None else ("missing-src", i)
        b = ("img", t) if t is not None else ("missing-tgt", i)
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
        nodes.append(a)
    roots: dict = {}
    return [roots.setdefault(find(a), len(roots)) for a in nodes]


def _reference_disjoint(src: list, tgt: list, order) -> list[bool]:
    used: set = set()
    keep = [False] * len(src)
    for i in order:
        images = {k for k in (src[i], tgt[i]) if k is not None}
        if used.isdisjoint(images):
            keep[i] = True
            used |= images
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_dependence_matches_a_plain_reference_loop(seed):
    # random pairings over few and many images, with missing keys and sources that are
    # also targets: labels, counts and the kept pairs equal a plain dict-and-set loop
    rng = np.random.default_rng(seed)
    n, n_images = int(rng.integers(1, 400)), int(rng.integers(2, 600))
    src = [f"i{k}" for k in rng.integers(0, n_images, n)]
    tgt = [f"i{k}" for k in rng.integers(0, n_images, n)]
    for i in rng.choice(n, size=n // 10, replace=False):
        (src if i % 2 else tgt)[i] = None
    order = rng.permutation(n)
    assert pair_clusters(src, tgt).labels.tolist() == _reference_components(src, tgt)
    assert disjoint_pairs(src, tgt, order).tolist() == _reference_disjoint(src, tgt, order)
    cl = pair_clusters(src, tgt)
    assert cl.n_src == len({s for s in src if s is not None}) + src.count(None)
    assert cl.n_tgt == len({t for t in tgt if t is not None}) + tgt.count(None)
    by_tgt = pair_clusters(src, tgt, by="tgt")
    first: dict = {}
    want = [first.setdefault(t if t is not None else ("missing", i), len(first))
            for i, t in enumerate(tgt)]
    assert by_tgt.labels.tolist() == want and by_tgt.n_clusters == len(first)


@pytest.mark.parametrize("spread", [1, 1_000_003])
def test_integer_keys_count_like_the_same_keys_as_text(spread):
    # integer keys (the codes the Arrow path hands over; dense or spread far apart, negative
    # ones included) give the same units as the same images named as text
    rng = np.random.default_rng(7)
    n = 300
    src_i = rng.integers(-20, 200, n) * spread
    tgt_i = rng.integers(-20, 200, n) * spread
    src_s, tgt_s = [f"k{k}" for k in src_i], [f"k{k}" for k in tgt_i]
    order = rng.permutation(n)
    for by in ("components", "disjoint", "auto", "src", "tgt", "none"):
        a = pair_clusters(src_i, tgt_i, by=by, order=order)
        b = pair_clusters(src_s, tgt_s, by=by, order=order)
        assert a.labels.tolist() == b.labels.tolist(), by
        assert (a.n_src, a.n_tgt, a.n_clusters, a.by) == (b.n_src, b.n_tgt, b.n_clusters, b.by)
    assert pair_clusters(src_i, tgt_i).labels.tolist() == _reference_components(src_s, tgt_s)
