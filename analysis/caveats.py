"""Caveats a reader must see before any verdict: today, results of random-init weights."""

from __future__ import annotations

from collections.abc import Sequence


def is_random_init(weights: str | None) -> bool:
    return bool(weights) and str(weights).startswith("random:")


def random_weights_caveat(weights: Sequence[str | None] | str | None) -> str | None:
    """The caveat the report opens with (and the Models page shows above its verdicts) when any
    of `weights` is a random initialisation (`random:<seed>`); None otherwise."""
    if isinstance(weights, str) or weights is None:
        weights = [weights]
    seeds = sorted({str(w) for w in weights if is_random_init(w)})
    if not seeds:
        return None
    return (f"These results are for random-init weights ({', '.join(seeds)}): they describe an "
            f"untrained network, not the model as trained, and a random head's argmax names no "
            f"class (head labels are off for them).")
