"""The probe registry: name -> Probe class; `build_probe(name, params)` validates parameters.

Probes are pure torch: no Ray, no DuckDB, no file I/O. Each probe class owns what is known about
it: its parameters, its loop, its encoder passes per pair for the planner (`passes_per_pair`,
`needs_dims`, `bound_note`, `expected_passes`, `loop_precision`) and what `vitsweep probe`
shows for one pair (`cli_fields`, `cli_summary`). Adding a probe: its module here, its table in
sweep/schema.py and its SQL in analysis/queries/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.errors import UserError
from sweep.probes.base import PairInput, PairResult, Passes, Probe
from sweep.probes.equivalence import EquivalenceProbe
from sweep.probes.lipschitz import LipschitzProbe
from sweep.probes.match import MatchProbe
from sweep.probes.perturb import PerturbProbe

PROBES: dict[str, type[Probe]] = {p.name: p for p in (MatchProbe, PerturbProbe, LipschitzProbe, EquivalenceProbe)}


def build_probe(name: str, params: Mapping[str, Any] | None = None) -> Probe:
    """A probe with validated parameters; unknown names or parameters raise UserError."""
    if name not in PROBES:
        raise UserError(f"unknown probe {name!r} (choose from {', '.join(PROBES)})")
    return PROBES[name].from_mapping(params or {})


__all__ = ["PROBES", "PairInput", "PairResult", "Passes", "Probe", "build_probe"]
