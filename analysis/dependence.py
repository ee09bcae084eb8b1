"""Dependence between pairs, decided on image keys alone: which pairs share images, and the
independent units a verdict counts (analysis/intervals.py's module docstring explains the rules;
`pair_clusters` and `disjoint_pairs` are public there too). Keys become integer image codes
once (pandas' hash factorisation); components come from scipy's sparse graph search, so a 10,000-pair check takes
milliseconds rather than the second a dict-based union-find took."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


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

@dataclass(frozen=True)
class _Codes:
    """Image codes of the pairs: src[i], tgt[i] in 0..n_images-1 (integer keys keep their
    offsets, so some codes may go unused), one code per distinct key over sources and targets
    together (a source and a target key that are equal are one image), and
    a fresh code for every missing key (an image seen nowhere else)."""

    src: np.ndarray  # (n,) int64
    tgt: np.ndarray  # (n,) int64
    n_images: int
    n_src: int
    n_tgt: int


def _codes(src_keys: Sequence[Hashable | None], tgt_keys: Sequence[Hashable | None]) -> _Codes:
    if len(src_keys) != len(tgt_keys):
        raise ValueError(f"{len(src_keys)} source keys but {len(tgt_keys)} target keys")
    n = len(src_keys)
    src_arr, tgt_arr = src_keys, tgt_keys
    if (n and isinstance(src_arr, np.ndarray) and isinstance(tgt_arr, np.ndarray)
            and src_arr.dtype.kind in "iu" and tgt_arr.dtype.kind in "iu"):
        # integer keys (the Arrow path's codes): offsets from the smallest are codes already
        low = int(min(src_arr.min(), tgt_arr.min()))
        src, tgt = src_arr.astype(np.int64) - low, tgt_arr.astype(np.int64) - low
        n_images = int(max(src.max(), tgt.max())) + 1
        if n_images <= 4 * n + 16:  # else a sparse range: hash them like any key
            return _Codes(src, tgt, n_images, _distinct(src, n_images), _distinct(tgt, n_images))
    keys = np.empty(2 * n, dtype=object)  # sources, then targets
    keys[:n], keys[n:] = list(src_keys), list(tgt_keys)
    # hash-based; None and NaN get -1
    codes, uniques = pd.factorize(keys, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    missing = codes < 0
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))  # each its own image
    src, tgt = codes[:n], codes[n:]
    n_images = len(uniques) + int(missing.sum())
    return _Codes(src, tgt, n_images, _distinct(src, n_images), _distinct(tgt, n_images))


def _distinct(codes: np.ndarray, n_images: int) -> int:
    return int(np.count_nonzero(np.bincount(codes, minlength=n_images)))


def _greedy_disjoint(codes: _Codes, order: Sequence[int] | np.ndarray | None) -> np.ndarray:
    n = len(codes.src)
    idx = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    # a pair with two distinct images that no other pair has is kept in any order: only the
    # others go through the pass in order (the sequential pass is the slow part)
    seen = (np.bincount(codes.src, minlength=codes.n_images)
            + np.bincount(codes.tgt, minlength=codes.n_images))
    keep = (seen[codes.src] == 1) & (seen[codes.tgt] == 1)
    idx = idx[~keep[idx]]
    if not idx.size:
        return keep
    used = bytearray(codes.n_images)
    for i, a, b in zip(idx.tolist(), codes.src[idx].tolist(), codes.tgt[idx].tolist()):
        if not used[a] and not used[b]:
            keep[i] = True
            used[a] = used[b] = 1
    return keep


def disjoint_pairs(src_keys: Sequence[Hashable | None], tgt_keys: Sequence[Hashable | None],
                   order: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """A mask of pairs no two of which share an image: greedily, in `order` (pair indices; the
    given order by default), keep a pair when neither of its images is in a kept pair. It
    depends on the keys and the order only, never on the values, so the kept pairs are
    independent draws and the exact intervals apply to them as they are."""
    return _greedy_disjoint(_codes(src_keys, tgt_keys), order)


def pair_clusters(src_keys: Sequence[Hashable | None], tgt_keys: Sequence[Hashable | None],
                  by: Literal["auto", "components", "disjoint", "src", "tgt", "none"] = "components",
                  order: Sequence[int] | np.ndarray | None = None) -> PairClusters:
    """Independent units of pairs (src_keys[i], tgt_keys[i]).

    by="components": connected components of the graph over image keys with one edge per pair
    (a source and a target key that are equal are one image); by="disjoint": every pair of
    `disjoint_pairs(src, tgt, order)` is its own unit and the others are set aside (label -1);
    by="auto": whichever of the two gives more units (a choice made on keys alone; ties:
    components, which uses every pair); by="tgt" / "src": one cluster per distinct target /
    source key; by="none": every pair its own unit. A missing key (None/NaN) is an image seen
    nowhere else."""
    if by not in ("components", "disjoint", "auto", "src", "tgt", "none"):
        raise ValueError(f"by must be 'auto', 'components', 'disjoint', 'src', 'tgt' or 'none', "
                         f"got {by!r}")
    codes = _codes(src_keys, tgt_keys)
    n = len(codes.src)
    if by == "none":
        return PairClusters(np.arange(n), n, codes.n_src, codes.n_tgt, n, "none")
    if by in ("src", "tgt"):
        labels, count = _first_appearance(codes.src if by == "src" else codes.tgt)
        return PairClusters(labels, n, codes.n_src, codes.n_tgt, count, by)
    if by in ("disjoint", "auto"):
        keep = _greedy_disjoint(codes, order)
        labels = np.full(n, -1, dtype=np.int64)
        labels[keep] = np.arange(int(keep.sum()))
        disjoint = PairClusters(labels, n, codes.n_src, codes.n_tgt, int(keep.sum()), "disjoint",
                                n_set_aside=int(n - keep.sum()))
        if by == "disjoint":
            return disjoint
    components = _components(codes)
    if by == "auto" and disjoint.n_clusters > components.n_clusters:
        return disjoint
    return components


def _first_appearance(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel `values` 0, 1, ... in order of first appearance; (labels, number of labels)."""
    labels, uniques = pd.factorize(values)  # hash-based, codes in order of first appearance
    return labels.astype(np.int64), len(uniques)


def _components(codes: _Codes) -> PairClusters:
    n = len(codes.src)
    graph = coo_matrix((np.ones(n, dtype=np.int8), (codes.src, codes.tgt)),
                       shape=(codes.n_images, codes.n_images))
    _, image_component = connected_components(graph, directed=False)
    labels, count = _first_appearance(image_component[codes.src])
    return PairClusters(labels, n, codes.n_src, codes.n_tgt, count, "components")
