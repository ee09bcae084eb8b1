"""Pairing strategies: which (source, target) image pairs a shard set holds.

Pure functions over a list of (key, label) items; no I/O. A strategy defines a *pair space*
(every pair it allows, numbered 0..size-1, decoded on demand) and the plan walks it either in
order (`all`) or in a seeded pseudo-random order without repeats (every other strategy). The
random order comes from a keyed Feistel permutation of the index range, so drawing 50,000
distinct pairs out of 2.5 billion possible ones takes constant memory and no rejection lists.

Strategies:
    random        any source and target, source != target
    cross-class   source and target have different labels (unlabelled items are left out)
    same-class    source and target share a label (classes of one image are left out)
    all           every ordered pair (n * (n - 1)), in (source, target) order
    fixed-target  one target (by key, or drawn with the seed), every other item a source
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sweep.errors import UserError

STRATEGIES: tuple[str, ...] = ("random", "cross-class", "same-class", "all", "fixed-target")
DEFAULT_PAIRS = 1000  # pairs drawn when the caller does not say how many (capped at what exists)
MAX_ALL_PAIRS = 1_000_000  # `all` is for small sets; beyond this a sample is what one wants

Item = tuple[str, "int | None"]  # (key, label); label None = unlabelled

_M64 = (1 << 64) - 1


class PairSpace(Protocol):
    """Every pair a strategy allows, numbered 0..size-1."""

    size: int

    def pair(self, index: int) -> tuple[int, int]: ...


@dataclass(frozen=True)
class AllPairs:
    """Ordered pairs (s, t) of n items with s != t, numbered s-major."""

    n: int

    @property
    def size(self) -> int:
        return self.n * (self.n - 1)

    def pair(self, index: int) -> tuple[int, int]:
        src, r = divmod(index, self.n - 1)
        return src, r + (r >= src)


@dataclass(frozen=True)
class FixedTarget:
    """Pairs (s, target) for every item s other than the target."""

    n: int
    target: int

    @property
    def size(self) -> int:
        return self.n - 1

    def pair(self, index: int) -> tuple[int, int]:
        return index + (index >= self.target), self.target


@dataclass(frozen=True)
class _Groups:
    """Labelled items grouped by label: `order[starts[g]:starts[g] + sizes[g]]` is class g."""

    order: list[int]
    starts: list[int]
    sizes: list[int]

    @classmethod
    def of(cls, labels: Sequence[int | None], min_size: int = 1) -> "_Groups":
        members: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            if label is not None:
                members.setdefault(label, []).append(index)
        order: list[int] = []
        starts: list[int] = []
        sizes: list[int] = []
        for label in sorted(members):
            if len(members[label]) >= min_size:
                starts.append(len(order))
                sizes.append(len(members[label]))
                order.extend(members[label])
        return cls(order, starts, sizes)


@dataclass(frozen=True)
class CrossClassPairs:
    """Pairs (s, t) of labelled items whose labels differ, numbered class by class, s-major."""

    groups: _Groups
    block_starts: list[int] = field(default_factory=list)  # first pair index of each class

    @classmethod
    def of(cls, labels: Sequence[int | None]) -> "CrossClassPairs":
        groups = _Groups.of(labels)
        total = len(groups.order)
        starts, running = [], 0
        for size in groups.sizes:
            starts.append(running)
            running += size * (total - size)
        return cls(groups, starts + [running])

    @property
    def size(self) -> int:
        return self.block_starts[-1]

    def pair(self, index: int) -> tuple[int, int]:
        g = bisect.bisect_right(self.block_starts, index) - 1
        start, size = self.groups.starts[g], self.groups.sizes[g]
        others = len(self.groups.order) - size
        src_pos, r = divmod(index - self.block_starts[g], others)
        # r-th item outside class g in the grouped order: skip over the class's own block
        tgt_pos = r if r < start else r + size
        return self.groups.order[start + src_pos], self.groups.order[tgt_pos]


@dataclass(frozen=True)
class SameClassPairs:
    """Pairs (s, t), s != t, of items sharing a label, numbered class by class, s-major."""

    groups: _Groups
    block_starts: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, labels: Sequence[int | None]) -> "SameClassPairs":
        groups = _Groups.of(labels, min_size=2)
        starts, running = [], 0
        for size in groups.sizes:
            starts.append(running)
            running += size * (size - 1)
        return cls(groups, starts + [running])

    @property
    def size(self) -> int:
        return self.block_starts[-1]

    def pair(self, index: int) -> tuple[int, int]:
        g = bisect.bisect_right(self.block_starts, index) - 1
        start, size = self.groups.starts[g], self.groups.sizes[g]
        src_pos, r = divmod(index - self.block_starts[g], size - 1)
        tgt_pos = r + (r >= src_pos)
        return self.groups.order[start + src_pos], self.groups.order[start + tgt_pos]


class FeistelPermutation:
    """A seeded bijection of range(size) evaluated one index at a time (O(1) memory).

    A 4-round balanced Feistel network permutes the smallest even-bit power of two >= size;
    indices that land outside range(size) are mapped again (cycle walking), which keeps it a
    bijection of range(size). Fewer than 4 tries per index on average.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        bits = max(2, (size - 1).bit_length())
        bits += bits % 2
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        rng = random.Random(seed)
        self._keys = [rng.getrandbits(64) for _ in range(4)]

    def _round(self, value: int, key: int) -> int:
        z = (value * 0x9E3779B97F4A7C15 + key) & _M64  # splitmix64 finaliser
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return (z ^ (z >> 31)) & self._mask

    def _step(self, x: int) -> int:
        left, right = x >> self._half, x & self._mask
        for key in self._keys:
            left, right = right, left ^ self._round(right, key)
        return (left << self._half) | right

    def __call__(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise IndexError(index)
        x = self._step(index)
        while x >= self.size:
            x = self._step(x)
        return x


@dataclass(frozen=True)
class PairPlan:
    """A validated pairing: iterate it for (source index, target index) tuples, lazily."""

    strategy: str
    count: int
    seed: int
    space: PairSpace
    target: int | None = None  # fixed-target only: the target's item index
    target_key: str | None = None
    shuffled: bool = True

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffled:
            for index in range(self.count):
                yield self.space.pair(index)
            return
        permutation = FeistelPermutation(self.space.size, _stream_seed(self.strategy, self.seed))
        for index in range(self.count):
            yield self.space.pair(permutation(index))

    def __len__(self) -> int:
        return self.count

    def describe(self) -> dict[str, object]:
        """What a manifest records about the pairing."""
        return {
            "strategy": self.strategy,
            "pairs": self.count,
            "seed": self.seed,
            "distinct_pairs_possible": self.space.size,
            "target_key": self.target_key,
        }


def _stream_seed(strategy: str, seed: int) -> int:
    # Different strategies with one seed should not walk their spaces in lock-step.
    return random.Random(f"{strategy}:{seed}").getrandbits(64)


def plan_pairs(
    items: Sequence[Item],
    strategy: str,
    pairs: int | None = None,
    seed: int = 0,
    target: str | None = None,
) -> PairPlan:
    """Validate a strategy against the items and return its plan (UserError if it cannot work).

    `pairs` None means DEFAULT_PAIRS (capped at the pairs that exist) for the drawn strategies,
    and every pair for `all`; asking for more distinct pairs than exist is an error.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"unknown pairing {strategy!r} (choose from: {', '.join(STRATEGIES)})")
    if pairs is not None and pairs < 1:
        raise UserError(f"--pairs must be at least 1 (got {pairs})")
    if target is not None and strategy != "fixed-target":
        raise UserError(f"--target applies only to --pairing fixed-target, not {strategy}")
    n = len(items)
    labels = [label for _, label in items]
    if n < 2:
        raise UserError(f"pairing needs at least 2 usable images, found {n}")

    target_index: int | None = None
    space: PairSpace
    if strategy in ("random", "all"):
        space = AllPairs(n)
    elif strategy == "cross-class":
        _require_labels(labels, strategy)
        space = CrossClassPairs.of(labels)
        if space.size == 0:
            raise UserError(
                "cross-class pairing needs labelled images of at least 2 classes, found 1 class; "
                "use --pairing random or same-class"
            )
    elif strategy == "same-class":
        _require_labels(labels, strategy)
        space = SameClassPairs.of(labels)
        if space.size == 0:
            raise UserError(
                "same-class pairing needs a class with at least 2 usable images, and no class has; "
                "use --pairing random or cross-class"
            )
    else:
        target_index = _find_target(items, target, seed)
        space = FixedTarget(n, target_index)

    if strategy == "all":
        if pairs is not None:
            raise UserError(
                f"--pairs does not apply to --pairing all (it makes every ordered pair: {space.size})"
            )
        if space.size > MAX_ALL_PAIRS:
            raise UserError(
                f"--pairing all would make {space.size} pairs of {n} images (more than {MAX_ALL_PAIRS}); "
                "use --pairing random with --pairs"
            )
        count = space.size
    elif pairs is None:
        count = min(DEFAULT_PAIRS, space.size)
    elif pairs > space.size:
        raise UserError(
            f"only {space.size} distinct {strategy} pairs exist among {n} usable images; "
            f"ask for at most {space.size} with --pairs"
        )
    else:
        count = pairs
    return PairPlan(
        strategy=strategy,
        count=count,
        seed=seed,
        space=space,
        target=target_index,
        target_key=items[target_index][0] if target_index is not None else None,
        shuffled=strategy != "all",
    )


def iter_pairs(
    items: Sequence[Item],
    strategy: str,
    pairs: int | None = None,
    seed: int = 0,
    target: str | None = None,
) -> Iterator[tuple[int, int]]:
    """(source index, target index) tuples of `plan_pairs(...)`, generated lazily."""
    return iter(plan_pairs(items, strategy, pairs, seed, target))


def _require_labels(labels: Sequence[int | None], strategy: str) -> None:
    if all(label is None for label in labels):
        raise UserError(
            f"{strategy} pairing needs labelled images (an image folder with one sub-folder per "
            "class, or shards with a cls field); these images have no labels"
        )


def _find_target(items: Sequence[Item], target: str | None, seed: int) -> int:
    if target is None:
        return random.Random(f"fixed-target:{seed}").randrange(len(items))
    for index, (key, _) in enumerate(items):
        if key == target:
            return index
    examples = ", ".join(key for key, _ in items[:3])
    raise UserError(f"no usable image has key {target!r} (keys look like: {examples})")


__all__ = [
    "DEFAULT_PAIRS",
    "STRATEGIES",
    "AllPairs",
    "CrossClassPairs",
    "FeistelPermutation",
    "FixedTarget",
    "PairPlan",
    "SameClassPairs",
    "iter_pairs",
    "plan_pairs",
]
