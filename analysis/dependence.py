"""Dependence between pairs, decided on image keys alone: which pairs share images, and the
independent units a verdict counts (analysis/intervals.py's module docstring explains the rules;
`pair_clusters` and `disjoint_pairs` are public there too). numpy only."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class PairClusters:
    """Cluster label per pair (0..n_clusters-1, in order of first appearance; -1: a pair set
    aside so that the others share no image, by="disjoint"). n_src, n_tgt: distinct images over
    all the pairs given."""

    labels: np.ndarray
    n_pairs: int
    n_src: int | None
    n_tgt: int | None
    n_clusters: int
    by: str
    n_set_aside: int = 0


# ---------------------------------------------------------------- dependence

def _key(value: Hashable | None) -> Hashable | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def disjoint_pairs(src_keys: Sequence[Hashable | None], tgt_keys: Sequence[Hashable | None],
                   order: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """A mask of pairs no two of which share an image: greedily, in `order` (pair indices; the
    given order by default), keep a pair when neither of its images is in a kept pair. It
    depends on the keys and the order only, never on the values, so the kept pairs are
    independent draws and the exact intervals apply to them as they are."""
    src = [_key(s) for s in src_keys]
    tgt = [_key(t) for t in tgt_keys]
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} source keys but {len(tgt)} target keys")
    n = len(src)
    idx = range(n) if order is None else [int(i) for i in order]
    used: set[Hashable] = set()
    keep = np.zeros(n, dtype=bool)
    for i in idx:
        images = {key for key in (src[i], tgt[i]) if key is not None}
        if used.isdisjoint(images):
            keep[i] = True
            used |= images
    return keep


def pair_clusters(src_keys: Sequence[Hashable | None], tgt_keys: Sequence[Hashable | None],
                  by: Literal["auto", "components", "disjoint", "src", "tgt"] = "components",
                  order: Sequence[int] | np.ndarray | None = None) -> PairClusters:
    """Independent units of pairs (src_keys[i], tgt_keys[i]).

    by="components": connected components of the graph over image keys with one edge per pair
    (a source and a target key that are equal are one image); by="disjoint": every pair of
    `disjoint_pairs(src, tgt, order)` is its own unit and the others are set aside (label -1);
    by="auto": whichever of the two gives more units (a choice made on keys alone; ties:
    components, which uses every pair); by="tgt" / "src": one cluster per distinct target /
    source key. A missing key (None/NaN) is an image seen nowhere else."""
    src = [_key(s) for s in src_keys]
    tgt = [_key(t) for t in tgt_keys]
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} source keys but {len(tgt)} target keys")
    n = len(src)
    n_src = len({s for s in src if s is not None}) + sum(s is None for s in src)
    n_tgt = len({t for t in tgt if t is not None}) + sum(t is None for t in tgt)
    if by in ("src", "tgt"):
        keys = src if by == "src" else tgt
        seen: dict[Hashable, int] = {}
        labels = np.empty(n, dtype=np.int64)
        for i, key in enumerate(keys):
            node = ("missing", i) if key is None else key
            labels[i] = seen.setdefault(node, len(seen))
        return PairClusters(labels, n, n_src, n_tgt, len(seen), by)
    if by not in ("components", "disjoint", "auto"):
        raise ValueError(f"by must be 'auto', 'components', 'disjoint', 'src' or 'tgt', got {by!r}")
    if by in ("disjoint", "auto"):
        keep = disjoint_pairs(src, tgt, order)
        labels = np.full(n, -1, dtype=np.int64)
        labels[keep] = np.arange(int(keep.sum()))
        disjoint = PairClusters(labels, n, n_src, n_tgt, int(keep.sum()), "disjoint",
                                n_set_aside=int(n - keep.sum()))
        if by == "disjoint":
            return disjoint
    components = _components(src, tgt, n_src, n_tgt)
    if by == "auto" and disjoint.n_clusters > components.n_clusters:
        return disjoint
    return components


def _components(src: list[Hashable | None], tgt: list[Hashable | None], n_src: int,
                n_tgt: int) -> PairClusters:
    n = len(src)
    parent: dict[Hashable, Hashable] = {}

    def find(x: Hashable) -> Hashable:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    nodes = []
    for i in range(n):
        a = ("img", src[i]) if src[i] is not None else ("missing-src", i)
        b = ("img", tgt[i]) if tgt[i] is not None else ("missing-tgt", i)
        for node in (a, b):
            parent.setdefault(node, node)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
        nodes.append(a)
    roots: dict[Hashable, int] = {}
    labels = np.empty(n, dtype=np.int64)
    for i, node in enumerate(nodes):
        labels[i] = roots.setdefault(find(node), len(roots))
    return PairClusters(labels, n, n_src, n_tgt, len(roots), "components")
