"""Pairing strategies: invariants, reproducibility, clear errors, and lazy generation."""

from __future__ import annotations

import itertools
import tracemalloc
from collections import Counter

import pytest

from sweep.errors import UserError
from sweep.data.pairing import DEFAULT_PAIRS, FeistelPermutation, iter_pairs, plan_pairs

# 9 items: class 0 x4, class 1 x3, class 2 x1, and one unlabelled
ITEMS = [("a0", 0), ("a1", 0), ("a2", 0), ("a3", 0), ("b0", 1), ("b1", 1), ("b2", 1), ("c0", 2), ("u0", None)]


@pytest.mark.parametrize("size", [*range(1, 70), 97, 1000, 4097])
def test_feistel_is_a_bijection(size: int) -> None:
    perm = FeistelPermutation(size, seed=size)
    assert sorted(perm(i) for i in range(size)) == list(range(size))


def test_feistel_depends_on_seed() -> None:
    a = [FeistelPermutation(1000, 1)(i) for i in range(50)]
    b = [FeistelPermutation(1000, 2)(i) for i in range(50)]
    assert a != b


def test_all_is_every_ordered_pair() -> None:
    pairs = list(iter_pairs(ITEMS, "all"))
    n = len(ITEMS)
    assert len(pairs) == n * (n - 1)
    assert set(pairs) == {(s, t) for s, t in itertools.permutations(range(n), 2)}


def test_all_rejects_a_pair_count() -> None:
    with pytest.raises(UserError, match="does not apply"):
        plan_pairs(ITEMS, "all", pairs=5)


def test_random_distinct_no_self_pairs_reproducible() -> None:
    n = len(ITEMS)
    pairs = list(iter_pairs(ITEMS, "random", pairs=n * (n - 1), seed=3))
    assert all(s != t for s, t in pairs)
    assert len(set(pairs)) == len(pairs) == n * (n - 1)  # drawn without repeats: covers the space
    assert list(iter_pairs(ITEMS, "random", pairs=20, seed=3)) == pairs[:20]
    assert list(iter_pairs(ITEMS, "random", pairs=20, seed=4)) != pairs[:20]


def test_random_default_count_and_too_many() -> None:
    assert len(plan_pairs(ITEMS, "random")) == 72  # 9 * 8 < DEFAULT_PAIRS
    big = [(f"k{i}", None) for i in range(100)]
    assert len(plan_pairs(big, "random")) == DEFAULT_PAIRS
    with pytest.raises(UserError, match="only 72 distinct random pairs"):
        plan_pairs(ITEMS, "random", pairs=73)


def test_cross_class_labels_differ_and_unlabelled_left_out() -> None:
    plan = plan_pairs(ITEMS, "cross-class", pairs=None, seed=1)
    pairs = list(plan)
    labels = [label for _, label in ITEMS]
    # 8 labelled items; per class: 4*4 + 3*5 + 1*7 ordered cross pairs
    assert plan.space.size == 4 * 4 + 3 * 5 + 1 * 7 == len(pairs) == len(set(pairs))
    for s, t in pairs:
        assert labels[s] is not None and labels[t] is not None and labels[s] != labels[t]
    expected = {(s, t) for s, t in itertools.permutations(range(8), 2) if labels[s] != labels[t]}
    assert set(pairs) == expected


def test_same_class_labels_equal() -> None:
    pairs = list(iter_pairs(ITEMS, "same-class", seed=5))
    labels = [label for _, label in ITEMS]
    expected = {(s, t) for s, t in itertools.permutations(range(8), 2) if labels[s] == labels[t]}
    assert set(pairs) == expected and len(pairs) == 4 * 3 + 3 * 2
    assert list(iter_pairs(ITEMS, "same-class", pairs=5, seed=5)) == pairs[:5]


@pytest.mark.parametrize(
    "strategy, items, message",
    [
        ("same-class", [("a", 0), ("b", 1), ("c", 2)], "needs a class with at least 2"),
        ("same-class", [("a", None), ("b", None)], "needs labelled images"),
        ("cross-class", [("a", 0), ("b", 0), ("c", None)], "at least 2 classes"),
        ("cross-class", [("a", None), ("b", None)], "needs labelled images"),
        ("random", [("a", 0)], "at least 2 usable images"),
        ("bogus", ITEMS, "unknown pairing"),
    ],
)
def test_unusable_strategy_is_a_user_error(strategy: str, items: list, message: str) -> None:
    with pytest.raises(UserError, match=message):
        plan_pairs(items, strategy)


def test_fixed_target_by_key_and_by_seed() -> None:
    plan = plan_pairs(ITEMS, "fixed-target", target="b1")
    pairs = list(plan)
    assert plan.target == 5 and plan.target_key == "b1"
    assert {t for _, t in pairs} == {5}
    assert sorted(s for s, _ in pairs) == [i for i in range(9) if i != 5]
    seeded = [plan_pairs(ITEMS, "fixed-target", seed=s).target for s in range(20)]
    assert seeded == [plan_pairs(ITEMS, "fixed-target", seed=s).target for s in range(20)]
    assert len(set(seeded)) > 1  # the seed really chooses
    with pytest.raises(UserError, match="no usable image has key 'zz'"):
        plan_pairs(ITEMS, "fixed-target", target="zz")
    with pytest.raises(UserError, match="only applies|applies only"):
        plan_pairs(ITEMS, "random", target="b1")


def test_fifty_thousand_pairs_stream_in_constant_memory() -> None:
    items = [(f"k{i}", i % 1000) for i in range(50_000)]
    plan = plan_pairs(items, "cross-class", pairs=50_000, seed=0)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        sources: Counter[int] = Counter()
        for s, t in plan:
            assert items[s][1] != items[t][1]
            sources[s // 1000] += 1  # bounded: 50 buckets
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert sum(sources.values()) == 50_000
    assert peak < 200_000, peak  # nothing proportional to the 50,000 pairs was kept
    assert min(sources.values()) > 700  # sources spread over the whole list (mean 1000)


def test_all_refuses_a_huge_set() -> None:
    items = [(f"k{i}", None) for i in range(1001)]  # 1001 * 1000 > MAX_ALL_PAIRS
    with pytest.raises(UserError, match="use --pairing random"):
        plan_pairs(items, "all")
