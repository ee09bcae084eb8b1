"""A plan as numbers, JSON and text: one `Row` per model x probe setting, and the `Plan` that
totals them (image passes, device-seconds, GPU-hours (CPU-hours when calibrated on a CPU), wall
time on `gpus` devices), writes
itself as JSON (`vitsweep plan --json`, a run's plan.json) and renders the table `vitsweep plan`
prints and the one line `vitsweep run` prints. Built by `make_plan` (sweep/planning/plan.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sweep.probes.base import Passes


@dataclass
class Row:
    """One model x probe setting of the plan."""

    model: str
    weights: str
    probe: str
    config_hash: str
    setting: str
    units: int
    pairs: int | None
    per_pair: Passes | None  # None: the count needs an embedding size D nobody could tell
    per_pair_expected: Passes | None
    expected_from: int = 0  # pairs of earlier runs the expected count comes from
    seconds_per_pair: float | None = None
    seconds_per_pair_expected: float | None = None
    rate_source: str | None = None
    bound: str = ""  # why per_pair is an upper bound; "" where it is exact
    dims: tuple[int, int] | None = None  # (D, d) where the count depends on them


@dataclass
class Plan:
    spec: str
    units: int
    units_done: int
    shards: int
    pairs: int | None  # distinct pairs in the shards (None: some shard could not be counted)
    unit_pairs: int | None  # pairs summed over units (every unit reads its shard's pairs)
    rows: list[Row]
    gpus: int
    longest_unit_s: float | None
    shards_uncounted: list[str] = field(default_factory=list)
    calibrated: bool = False
    cpu: bool = False  # calibrated on a CPU: the device-hours are CPU-hours, the devices CPUs
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    # -- totals ----------------------------------------------------------------------------------
    def _sum(self, attr: str) -> float | None:
        total = 0.0
        for row in self.rows:
            per, count = getattr(row, attr), row.pairs
            if per is None or count is None:
                return None
            total += per * count if isinstance(per, float) else per.total * count
        return total

    @property
    def image_passes(self) -> float | None:
        return self._sum("per_pair")

    @property
    def image_passes_expected(self) -> float | None:
        return self._sum("per_pair_expected")

    @property
    def seconds(self) -> float | None:
        return self._sum("seconds_per_pair")

    @property
    def seconds_expected(self) -> float | None:
        return self._sum("seconds_per_pair_expected")

    @property
    def gpu_hours(self) -> float | None:
        return None if self.seconds is None else self.seconds / 3600

    @property
    def device(self) -> str:
        """What the time is measured on: "CPU" (a CPU calibration) or "GPU" (CUDA, the rate table)."""
        return "CPU" if self.cpu else "GPU"

    def wall_seconds(self, seconds: float | None) -> float | None:
        """On `gpus` devices: the work shared out, but never less than the longest unit."""
        if seconds is None:
            return None
        return max(seconds / self.gpus, self.longest_unit_s or 0.0)

    # -- output ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        known = self.pairs is not None and all(r.per_pair is not None for r in self.rows)
        total = sum((r.per_pair * (r.pairs or 0) for r in self.rows if r.per_pair is not None), Passes())
        return {
            "spec": self.spec, "created_at": self.created_at, "calibrated": self.calibrated,
            "device": self.device.lower(),
            "units": self.units, "units_done": self.units_done, "shards": self.shards,
            "pairs": self.pairs, "unit_pairs": self.unit_pairs, "shards_uncounted": self.shards_uncounted,
            "image_passes": _int(self.image_passes), "image_passes_expected": _int(self.image_passes_expected),
            "forward_passes": _int(total.plain + total.backward + total.jvp) if known else None,
            "backward_passes": _int(total.backward) if known else None,
            "jvp_passes": _int(total.jvp) if known else None,
            "backward_row_passes": _int(total.rows) if known else None,  # fp32 Jacobian rows sharing a forward
            "seconds": _round(self.seconds), "seconds_expected": _round(self.seconds_expected),
            "gpu_hours": _round(self.gpu_hours), "gpus": self.gpus,
            "wall_seconds": _round(self.wall_seconds(self.seconds)),
            "wall_seconds_expected": _round(self.wall_seconds(self.seconds_expected)),
            "rate_sources": sorted({r.rate_source for r in self.rows if r.rate_source}),
            "rows": [{**{k: v for k, v in asdict(r).items() if k not in ("per_pair", "per_pair_expected")},
                      "per_pair": _asdict(r.per_pair), "per_pair_expected": _asdict(r.per_pair_expected),
                      "exact": not r.bound,
                      "image_passes": _passes(r.per_pair, r.pairs),
                      "image_passes_expected": _passes(r.per_pair_expected, r.pairs)}
                     for r in self.rows],
        }

    def summary(self, with_wall: bool = True) -> str:
        """One line: what `vitsweep run` prints before it starts."""
        pairs = "? pairs" if self.pairs is None else f"{self.pairs:,} pairs"
        text = f"plan: {self.units} units ({self.units_done} done), {pairs}"
        if self.image_passes is not None:
            text += f", ≤ {_big(self.image_passes)} image passes"
            if self.image_passes_expected is not None and self.image_passes_expected < self.image_passes:
                text += f" (~{_big(self.image_passes_expected)} expected)"
        if self.seconds is not None:
            where = "measured now" if self.calibrated else "H100 rate table"
            text += f", ≤ {_secs(self.gpu_hours or 0)} {self.device}-h ({where})"
            if with_wall:
                text += (f": ≤ {_duration(self.wall_seconds(self.seconds))} on {self.gpus} "
                         f"{self.device}{'s' if self.gpus > 1 else ''}")
        return text

    def render(self) -> str:
        """The table per model and probe setting, and the totals."""
        header = ["model", "weights", "probe", "setting", "units", "pairs", "plain/pair", "bwd/pair", "jvp/pair",
                  "rows/pair", "count", "image passes ≤", "expected", "seconds ≤", f"{self.device}-h ≤"]
        lines = [header]
        for r in self.rows:
            n = r.pairs
            per, expected = r.per_pair, r.per_pair_expected
            lines.append([
                r.model, r.weights, r.probe, r.setting, str(r.units), "?" if n is None else f"{n:,}",
                *(("?",) * 4 if per is None else (_num(per.plain), _num(per.backward), _num(per.jvp), _num(per.rows))),
                "?" if per is None else "upper bound" if r.bound else "exact",
                "?" if n is None or per is None else _big(per.total * n),
                "?" if n is None or expected is None else
                _big(expected.total * n) + (f" ({r.expected_from} pairs seen)" if r.expected_from else ""),
                "?" if n is None or r.seconds_per_pair is None else _secs(r.seconds_per_pair * n),
                "?" if n is None or r.seconds_per_pair is None else _secs(r.seconds_per_pair * n / 3600),
            ])
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        out = [f"plan for {self.spec}: {self.units} units ({self.units_done} already done), {self.shards} shards, "
               f"{'?' if self.pairs is None else format(self.pairs, ',')} pairs "
               f"({'?' if self.unit_pairs is None else format(self.unit_pairs, ',')} pair-units)"]
        out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
        notes = {f"{r.probe} ({r.setting})": r.bound for r in self.rows if r.bound}
        for name, note in notes.items():
            out.append(f"upper bound, {name}: {note}")
        for model, (dim, d) in {r.model: r.dims for r in self.rows if r.dims is not None}.items():
            out.append(f"{model}: lipschitz counts with embedding size D = {dim}, input size d = {d:,}")
        if any(r.per_pair is not None and r.per_pair.rows for r in self.rows):
            out.append("rows/pair: fp32 Jacobian rows (lipschitz null, jacobian fp32), backward halves sharing "
                       "one forward (counted in plain/pair); an image pass each")
        for model in sorted({r.model for r in self.rows if r.per_pair is None}):
            out.append(f"{model}: lipschitz's top/null/off_top count needs its embedding size D, known for a "
                       "factory encoder only by running it: use --calibrate")
        if self.shards_uncounted:
            out.append(f"pairs unknown for {len(self.shards_uncounted)} shard(s) (no readable manifest), e.g. "
                       f"{self.shards_uncounted[0]}: pass --pairs-per-shard N")
        if self.seconds is not None:
            out.append(f"total: ≤ {_secs(self.seconds)} device-seconds = {_secs(self.gpu_hours or 0)} {self.device}-hours"
                       + (f" (~{_secs(self.seconds_expected / 3600)} expected)" if self.seconds_expected and
                          self.seconds_expected < self.seconds else "")
                       + f"; on {self.gpus} {self.device}(s): ≤ {_duration(self.wall_seconds(self.seconds))} wall")
        elif self.pairs is None:
            out.append("time: unknown until the pairs are known")
        elif any(r.per_pair is None for r in self.rows):
            out.append("time: unknown until every count is known")
        else:
            out.append("time: unknown (a model has no rate in the table: use --calibrate)")
        for source in sorted({r.rate_source for r in self.rows if r.rate_source}):
            out.append(f"rates: {source}")
        return "\n".join(out)


# ------------------------------------------------------------------------------------- formatting

def _asdict(passes: Passes | None) -> dict[str, float] | None:
    return None if passes is None else asdict(passes)


def _passes(per: Passes | None, pairs: int | None) -> int | None:
    return None if per is None or pairs is None else _int(per.total * pairs)


def _int(x: float | None) -> int | None:
    return None if x is None else int(round(x))


def _round(x: float | None) -> float | None:
    """Four significant digits: a plan of a few milliseconds keeps them (not 0.0)."""
    return None if x is None else float(f"{x:.4g}")


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _secs(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _big(x: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
