"""A check's per-pair observations as columns: the value `y` (1/0 for a rate), the image keys
`s` and `t` that decide dependence, the pairs' order by pair id (which breaks ties when pairs
are set aside), and the step `h` where a statistic has one. claims.sql hands them over as a list
of structs per check, already ordered by pair id; reading them as numpy columns straight from
Arrow (keys dictionary-encoded there, rather than one dict per pair) keeps a 75,000-pair run's
verdicts to a few tenths of a second of Python."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Observations:
    """n observations of one check. y and h are float64 (h NaN where absent). s and t are the
    image keys: any hashable values (None: missing), or integer codes shared by sources and
    targets where they come from Arrow (a missing key gets a negative code of its own, as a
    missing key is an image seen nowhere else). p_rank[i] is observation i's place when
    ordered by str(pair id), ties in the given order."""

    y: np.ndarray       # (n,) float64
    s: np.ndarray       # (n,) object or int64
    t: np.ndarray       # (n,) object or int64
    p_rank: np.ndarray  # (n,) int64
    h: np.ndarray       # (n,) float64

    def __len__(self) -> int:
        return len(self.y)

    def select(self, mask: np.ndarray) -> Observations:
        return Observations(self.y[mask], self.s[mask], self.t[mask], self.p_rank[mask], self.h[mask])

    def pair_order(self) -> np.ndarray:
        """Observation indices ordered by str(pair id), ties in the given order."""
        return np.argsort(self.p_rank, kind="stable")

    @classmethod
    def empty(cls) -> Observations:
        none = np.empty(0, dtype=object)
        return cls(np.empty(0), none, none, np.empty(0, dtype=np.int64), np.empty(0))

    @classmethod
    def of(cls, obs: Observations | Sequence[Mapping[str, Any]] | pa.Array | None) -> Observations:
        """From Observations, a list of {"y", "s", "t", "p", "h"} dicts or an Arrow struct array
        of those fields (one without "p" is in pair order already, as claims.sql sends it);
        observations whose y is missing are left out."""
        if obs is None:
            return cls.empty()
        if isinstance(obs, Observations):
            return obs
        if isinstance(obs, (pa.Array, pa.ChunkedArray)):
            return cls._of_arrow(obs)
        kept = [o for o in obs if o.get("y") is not None]
        if not kept:
            return cls.empty()
        p_text = np.asarray([str(o.get("p")) for o in kept], dtype=str)
        return cls(np.asarray([o["y"] for o in kept], dtype=np.float64),
                   _objects([o.get("s") for o in kept]), _objects([o.get("t") for o in kept]),
                   _rank(np.argsort(p_text, kind="stable")),
                   np.asarray([np.nan if o.get("h") is None else o["h"] for o in kept],
                              dtype=np.float64))

    @classmethod
    def _of_arrow(cls, structs: pa.Array | pa.ChunkedArray) -> Observations:
        if isinstance(structs, pa.ChunkedArray):
            structs = structs.combine_chunks()
        if len(structs) == 0:
            return cls.empty()
        if structs.field("y").null_count:
            structs = structs.filter(pc.is_valid(structs.field("y")))
        n = len(structs)
        names = {structs.type.field(i).name for i in range(structs.type.num_fields)}

        def field(name: str) -> pa.Array:
            return structs.field(name) if name in names else pa.nulls(n)

        def numbers(name: str) -> np.ndarray:
            return field(name).cast(pa.float64()).to_numpy(zero_copy_only=False)

        keys = pa.concat_arrays([field("s"), field("t").cast(field("s").type)])  # sources, then targets
        codes = pc.fill_null(pc.dictionary_encode(keys).indices, -1).to_numpy().astype(np.int64)
        missing = codes < 0
        codes[missing] = -1 - np.arange(int(missing.sum()))  # a code of its own each
        if "p" in names:
            p_text = pc.fill_null(field("p").cast(pa.string()), "None")  # str(None), as for dicts
            rank = _rank(pc.sort_indices(p_text).to_numpy())  # stable
        else:
            rank = np.arange(n, dtype=np.int64)
        return cls(numbers("y"), codes[:n], codes[n:], rank, numbers("h"))


def _rank(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def list_cell(column: pa.ChunkedArray | pa.Array, i: int) -> pa.Array | None:
    """Row i of a list-of-structs column, as the struct array of its elements (None if null)."""
    cell = column[i]
    return None if not cell.is_valid else cell.values
