"""What a sweep spec will cost, before it runs: units, pairs, image passes, time and GPU-hours.

    plan = make_plan(load_spec("imagenet-val.yaml"), gpus=8)
    print(plan.render()); plan.to_json()

Counts come from the spec and the shards' manifests (a shard set without one is counted by
reading its tar headers); nothing is run on the data. Per pair, each probe setting needs a known
number of encoder passes (`passes_per_pair`, written from the probes' code: the tests count the
passes of a real probe run and compare):

- `plain`: forwards without a gradient (clean embeddings, fp32 re-checks and confirmations,
  finite differences, the random baseline),
- `backward`: forward + backward to the input (a gradient step or a vector-Jacobian product),
- `jvp`: forward-mode directional derivatives.

`image_passes` = forwards + backwards + jvps, each counted once per image. `perturb` and
`lipschitz` (without its `match` family) are exact; `lipschitz` with `top`, `null` or `off_top`
depends on the model's embedding size D (the Jacobian is D reverse-mode products) and input
size d, which `model_dims` reads off the model (a timm model traced on the meta device). `match`
is an upper bound (a pair runs to `max_steps`, with one fp32 confirmation of its stop), and so
is `lipschitz`'s `match` family (its match run; the direction only when the match succeeds);
the plan marks these rows. An overruled bf16 stop costs more than the bound, up to 10 steps
and a forward each (rare; not counted). Where a previous run of the same model and setting
(the same `config_hash`) left `match` rows in the output folder, the expected count uses the
steps those pairs really took. Time = plain / forward rate + backward / step rate + jvp / jvp
rate, with rates measured now (`calibrate`) or from the rate table (sweep/planning/rates.py).
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sweep.planning.rates import Rates, table_rates
from sweep.run.spec import LoadedSpec, WorkUnit

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Passes:
    """Encoder passes for one pair (image rows)."""

    plain: float = 0
    backward: float = 0
    jvp: float = 0

    @property
    def total(self) -> float:
        """Image passes: every forward, backward and tangent pass over one image counts one."""
        return self.plain + 2 * self.backward + 2 * self.jvp

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.plain + other.plain, self.backward + other.backward, self.jvp + other.jvp)

    def __mul__(self, k: float) -> "Passes":
        return Passes(self.plain * k, self.backward * k, self.jvp * k)


def passes_per_pair(probe: str, params: Any, dims: tuple[int, int] | None = None) -> Passes:
    """One pair's encoder passes for a probe setting (validated params): exact where the probe's
    work does not depend on the data, else an upper bound (`bound_note` says which and why).
    `dims` = (D, d), the embedding size and the number of input values: `lipschitz` needs them
    for `top`, `null` and `off_top` (`needs_dims`)."""
    if probe == "match":
        return _match_passes(params)
    if probe == "perturb":
        n_eps = len(params.eps or [])
        # clean source and target once; per eps: the steps, the fp32 forwards of the last and the
        # best iterate (the loop never evaluated the last one), the random draws
        return Passes(plain=2 + n_eps * (2 + params.random_draws), backward=n_eps * params.steps)
    if probe == "lipschitz":
        return _lipschitz_passes(params, dims)
    raise ValueError(f"no pass count for probe {probe!r}")


def needs_dims(probe: str, params: Any) -> bool:
    """Whether the setting's count depends on the model's embedding and input sizes."""
    return probe == "lipschitz" and any(f in params.families for f in ("top", "null", "off_top"))


# What makes a count an upper bound rather than exact (the match loop syncs every 10 steps).
_MATCH_BOUND = ("a pair stops at max_steps at the latest and the fp32 check confirms at most one "
                "in-loop stop; each stop that check overrules (bf16 loop) would add up to 10 steps "
                "and 1 forward, not counted")


def bound_note(probe: str, params: Any) -> str:
    """'' where `passes_per_pair` is exact; else why it is an upper bound."""
    if probe == "match":
        return _MATCH_BOUND
    if probe == "lipschitz" and "match" in params.families:
        return ("family match: its match run as for probe match (" + _MATCH_BOUND + "); "
                "the match direction's products only when that match succeeds")
    return ""


def _match_passes(p: Any) -> Passes:
    # the target at admission; max_steps steps (the loop syncs when a pair's step budget is spent,
    # so without an overruled stop no pair steps more); the fp32 forward confirming a stop the
    # in-loop test flagged; the fp32 re-checks of source, result and 8-bit result
    return Passes(plain=1 + 1 + 3, backward=p.max_steps)


def _lipschitz_passes(p: Any, dims: tuple[int, int] | None) -> Passes:
    families = set(p.families)
    # float64 f(x0) and f(t); the fp32 embeddings of source and target the results carry
    total = Passes(plain=4)
    n_top = 0
    if families & {"top", "null", "off_top"}:
        if dims is None:
            raise ValueError("lipschitz's top, null and off_top counts need the embedding size D")
        dim, d = dims
        n_top = min(p.top_k, dim, d)  # J has at most min(D, d) singular values
        if "null" in families:  # the Jacobian's D rows J^T e_i (each a forward + backward); top from its SVD
            total += Passes(backward=dim)
        else:  # subspace iteration: iters x (J V, J^T J V), then J V once more (Rayleigh-Ritz)
            width = min(min(p.top_k, d) + p.oversample, d)
            total += Passes(backward=p.iters * width, jvp=(p.iters + 1) * width)
    if "grad" in families:  # the matching loss's gradient at x0: one backward (f(x0), f(t) are known)
        total += Passes(backward=1)
    if "match" in families:  # a whole match run on the pair (upper bound)
        total += _match_passes(p.match)
    counts = {"random": p.n_random, "top": n_top, "grad": 1, "null": p.n_null, "off_top": p.n_null, "match": 1}
    n = sum(counts[f] for f in p.families)  # a family listed twice is measured twice
    return total + Passes(plain=n * len(p.h), jvp=n)  # the finite differences at every h, ||J v||


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
            "units": self.units, "units_done": self.units_done, "shards": self.shards,
            "pairs": self.pairs, "unit_pairs": self.unit_pairs, "shards_uncounted": self.shards_uncounted,
            "image_passes": _int(self.image_passes), "image_passes_expected": _int(self.image_passes_expected),
            "forward_passes": _int(total.plain + total.backward + total.jvp) if known else None,
            "backward_passes": _int(total.backward) if known else None,
            "jvp_passes": _int(total.jvp) if known else None,
            "seconds": _round(self.seconds), "seconds_expected": _round(self.seconds_expected),
            "gpu_hours": _round(self.gpu_hours, 4), "gpus": self.gpus,
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
            text += f", ≤ {_secs(self.gpu_hours or 0)} GPU-h ({where})"
            if with_wall:
                text += f": ≤ {_duration(self.wall_seconds(self.seconds))} on {self.gpus} GPU{'s' if self.gpus > 1 else ''}"
        return text

    def render(self) -> str:
        """The table per model and probe setting, and the totals."""
        header = ["model", "weights", "probe", "setting", "units", "pairs", "plain/pair", "bwd/pair", "jvp/pair",
                  "count", "image passes ≤", "expected", "seconds ≤", "GPU-h ≤"]
        lines = [header]
        for r in self.rows:
            n = r.pairs
            per, expected = r.per_pair, r.per_pair_expected
            lines.append([
                r.model, r.weights, r.probe, r.setting, str(r.units), "?" if n is None else f"{n:,}",
                *(("?", "?", "?") if per is None else (_num(per.plain), _num(per.backward), _num(per.jvp))),
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
        for model in sorted({r.model for r in self.rows if r.per_pair is None}):
            out.append(f"{model}: lipschitz's top/null/off_top count needs its embedding size D, known for a "
                       "factory encoder only by running it: use --calibrate")
        if self.shards_uncounted:
            out.append(f"pairs unknown for {len(self.shards_uncounted)} shard(s) (no readable manifest), e.g. "
                       f"{self.shards_uncounted[0]}: pass --pairs-per-shard N")
        if self.seconds is not None:
            out.append(f"total: ≤ {_secs(self.seconds)} device-seconds = {_secs(self.gpu_hours or 0)} GPU-hours"
                       + (f" (~{_secs(self.seconds_expected / 3600)} expected)" if self.seconds_expected and
                          self.seconds_expected < self.seconds else "")
                       + f"; on {self.gpus} GPU(s): ≤ {_duration(self.wall_seconds(self.seconds))} wall")
        elif self.pairs is None:
            out.append("time: unknown until the pairs are known")
        elif any(r.per_pair is None for r in self.rows):
            out.append("time: unknown until every count is known")
        else:
            out.append("time: unknown (a model has no rate in the table: use --calibrate)")
        for source in sorted({r.rate_source for r in self.rows if r.rate_source}):
            out.append(f"rates: {source}")
        return "\n".join(out)


# ------------------------------------------------------------------------------------- building

def make_plan(
    loaded: LoadedSpec,
    *,
    gpus: int = 1,
    rates: dict[str, Rates] | None = None,
    pairs_per_shard: int | None = None,
    previous: bool = True,
) -> Plan:
    """Count `loaded`'s work; `rates` by model (else the rate table), `pairs_per_shard` instead of
    reading manifests, `previous`: look for earlier results in the output folder."""
    counts, uncounted, manifests = {}, [], {}
    for shard in loaded.shards:
        n = pairs_per_shard if pairs_per_shard is not None else count_pairs(shard, manifests)
        counts[shard] = n
        if n is None:
            uncounted.append(shard)
    params = {p.params_json(): p.params for p, _ in loaded.settings}
    store = _store(loaded) if previous else None
    seen = _steps_seen(store) if store is not None else {}
    done_ids = _done_units(store) if store is not None else set()
    dims: dict[tuple[str, str, str], tuple[int, int] | None] = {}
    groups: dict[tuple[str, str, str, str], list[WorkUnit]] = defaultdict(list)
    for unit in loaded.units:
        groups[(unit.model, unit.weights, unit.probe, unit.config_hash)].append(unit)

    rows: list[Row] = []
    longest: float | None = 0.0
    for (model, weights, probe, config_hash), units in groups.items():
        p = params[units[0].params_json]
        shard_pairs = [counts[u.shard] for u in units]
        n_pairs = None if any(n is None for n in shard_pairs) else sum(shard_pairs)  # type: ignore[misc]
        rate = (rates or {}).get(model) or table_rates(model)
        dim = _dims(units[0], dims, rate) if needs_dims(probe, p) else None
        upper = passes_per_pair(probe, p, dim) if dim is not None or not needs_dims(probe, p) else None
        expected, n_seen = upper, 0
        if upper is not None and probe == "match" and config_hash in seen:
            mean_steps, n_seen, confirmed = seen[config_hash]
            # the upper bound's one confirmation forward, as often as earlier pairs needed it
            expected = Passes(plain=upper.plain - 1 + confirmed, backward=min(mean_steps, upper.backward))
        row = Row(model, weights, probe, config_hash, _setting(units[0].params), len(units), n_pairs,
                  upper, expected, n_seen, bound=bound_note(probe, p), dims=dim)
        if rate is not None and upper is not None and expected is not None:
            precision = _loop_precision(probe, p, cuda=rate.cuda)
            row.seconds_per_pair = _seconds(upper, rate, precision, units[0].compile)
            row.seconds_per_pair_expected = _seconds(expected, rate, precision, units[0].compile)
            row.rate_source = rate.source
            if longest is not None:
                longest = max([longest, *(row.seconds_per_pair * (n or 0) for n in shard_pairs)])
        else:
            longest = None
        rows.append(row)

    distinct = None if uncounted else sum(counts[s] or 0 for s in loaded.shards)
    unit_pairs = None if uncounted else sum(counts[u.shard] or 0 for u in loaded.units)
    return Plan(
        spec=loaded.source, units=len(loaded.units),
        units_done=sum(1 for u in loaded.units if u.unit_id in done_ids), shards=len(loaded.shards),
        pairs=distinct, unit_pairs=unit_pairs, rows=rows, gpus=max(1, gpus), longest_unit_s=longest,
        shards_uncounted=uncounted, calibrated=bool(rates),
    )


def _dims(unit: WorkUnit, cache: dict[tuple[str, str, str], tuple[int, int] | None],
          rate: Rates | None) -> tuple[int, int] | None:
    """(D, d) of the unit's model at its embedding point: a timm model's traced (once per model
    and point), a factory encoder's as --calibrate measured it (a factory has one embedding
    point), else None."""
    if ":" in unit.model:
        return rate.dims if rate is not None else None
    key = (unit.model, unit.weights, unit.embed)
    if key not in cache:
        from sweep.planning.calibrate import model_dims

        try:
            cache[key] = model_dims(*key)
        except Exception:  # e.g. an embedding point the model does not have: the run says so
            cache[key] = None
    return cache[key]


def _seconds(passes: Passes, rate: Rates, precision: str, compiled: bool) -> float:
    return passes.plain / rate.forward + passes.backward / rate.step(precision, compiled) + passes.jvp / rate.jvp


def _loop_precision(probe: str, params: Any, cuda: bool) -> str:
    """The precision of the probe's gradient steps: bf16 on CUDA unless the setting says fp32
    (the paper preset runs fp32). lipschitz's products run in float64 and are timed at the fp32
    rate (H100: the float64 tensor-core peak is about the fp32 one; unmeasured), its `match`
    family's steps too (an over-estimate where they run bf16)."""
    precision = getattr(params, "precision", "fp32")
    if probe == "lipschitz" or precision == "fp32" or not cuda:
        return "fp32"
    return "bf16"


def _setting(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


# ----------------------------------------------------------------------------------- counting pairs

def count_pairs(url: str, manifests: dict[str, dict[str, int] | None] | None = None) -> int | None:
    """Pairs in one shard: from its shard set's manifest, else (a local tar) by reading the tar's
    headers (samples grouped by key, as the reader groups them); None when neither is possible.
    `manifests` caches the manifests read so far, by folder."""
    from_manifest = _manifest_count(url, {} if manifests is None else manifests)
    if from_manifest is not None:
        return from_manifest
    if "://" not in url and os.path.isfile(url):
        return _tar_count(url)
    return None


def _manifest_count(url: str, manifests: dict[str, dict[str, int] | None]) -> int | None:
    folder, name = url.rsplit("/", 1) if "/" in url else (".", url)
    if folder not in manifests:
        manifests[folder] = _read_manifest(folder)
    table = manifests[folder]
    return None if table is None else table.get(name)


def _read_manifest(folder: str) -> dict[str, int] | None:
    from sweep.data.locations import MANIFEST

    path = f"{folder}/{MANIFEST}"
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rb") as f:
                data = json.load(f)
        else:
            if not os.path.isfile(path):
                return None
            with open(path, "rb") as f:
                data = json.load(f)
        return {s["name"]: int(s["pairs"]) for s in data["shards"]}
    except Exception:  # unreachable, missing or foreign: the caller counts another way or says "?"
        return None


def _tar_count(path: str) -> int | None:
    from webdataset.tariterators import base_plus_ext

    count, last = 0, None
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, _ = base_plus_ext(info.name)
                if key is not None and key != last:
                    count, last = count + 1, key
    except (OSError, tarfile.TarError):
        return count or None
    return count


# ------------------------------------------------------------------------------- earlier results

def _store(loaded: LoadedSpec) -> Any:
    if not loaded.spec.output:
        return None
    from sweep.run.store import RunStore

    try:
        return RunStore(loaded.spec.output)
    except Exception:
        return None


def _steps_seen(store: Any) -> dict[str, tuple[float, int, float]]:
    """config_hash -> (mean gradient steps computed per pair, pairs, share of pairs whose stop an
    fp32 forward confirmed) over earlier `match` rows."""
    try:
        import pyarrow.dataset as ds
        import pyarrow.fs as pafs

        folder = store.path("results/match")
        if store.fs.get_file_info(folder).type != pafs.FileType.Directory:
            return {}
        files = [f.path for f in store.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
                 if f.type == pafs.FileType.File and f.path.endswith(".parquet")]
        if not files:
            return {}
        table = ds.dataset(files, filesystem=store.fs, format="parquet").to_table(
            columns=["config_hash", "status", "steps", "success"])
    except Exception:
        return {}
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])
    for row in table.to_pylist():
        if row["status"] != "ok" or row["steps"] is None:
            continue
        # a pair that matched at x_s spent one more forward/backward to find out
        acc = sums[row["config_hash"]]
        acc[0] += row["steps"] + (1 if row["success"] else 0)
        acc[1] += 1
        acc[2] += 1 if row["success"] else 0
    return {h: (total / n, int(n), hits / n) for h, (total, n, hits) in sums.items() if n}


def _done_units(store: Any) -> set[str]:
    try:
        return {u for u, s in store.unit_status().items() if s == "ok"}
    except Exception:
        return set()


# ----------------------------------------------------------------------------------- run start

def record_plan(loaded: LoadedSpec, store: Any, gpus: int = 1) -> Plan | None:
    """The plan of a run at its start, written to the run directory (plan.json) for the dashboard;
    None (and nothing written) when it cannot be made: a plan never stops a run."""
    try:
        plan = make_plan(loaded, gpus=gpus)
        store.write_json(PLAN_FILE, plan.to_json())
        return plan
    except Exception:
        return None


# ------------------------------------------------------------------------------------- formatting

def _asdict(passes: Passes | None) -> dict[str, float] | None:
    return None if passes is None else asdict(passes)


def _passes(per: Passes | None, pairs: int | None) -> int | None:
    return None if per is None or pairs is None else _int(per.total * pairs)


def _int(x: float | None) -> int | None:
    return None if x is None else int(round(x))


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


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
