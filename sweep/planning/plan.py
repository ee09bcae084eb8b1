"""What a sweep spec will cost, before it runs: units, pairs, image passes, time and GPU-hours.

    plan = make_plan(load_spec("imagenet-val.yaml"), gpus=8)
    print(plan.render()); plan.to_json()

Counts come from the spec and the shards' manifests (a shard set without one is counted by
reading its tar headers); nothing is run on the data. Per pair, each probe setting needs a known
number of encoder passes, which each probe states itself (`Probe.passes_per_pair`,
`needs_dims`, `bound_note` in sweep/probes/; the tests count the passes of a real probe run
and compare):

- `plain`: forwards without a gradient (clean embeddings, fp32 re-checks and confirmations,
  finite differences, the random baseline),
- `backward`: forward + backward to the input (a gradient step or a vector-Jacobian product),
- `jvp`: forward-mode directional derivatives,
- `rows`: backward rows sharing one forward (lipschitz `null` with `jacobian: fp32`: one fp32
  forward, counted in `plain`, and D backward rows; with `jacobian: float64` D `backward`).

`image_passes` = forwards + backwards + jvps + rows, each counted once per image. `perturb` and
`lipschitz` (without its `match` family) are exact; `lipschitz` with `top`, `null` or `off_top`
depends on the model's embedding size D (the Jacobian is D reverse-mode products) and input
size d, which `model_dims` reads off the model (a timm model traced on the meta device). `match`
is an upper bound (a pair runs to `max_steps`, with one fp32 confirmation of its stop), and so
are `lipschitz`'s `match` family (its match run; the direction only when the match succeeds)
and `equivalence` (its match run; path linearity only after a successful match; each walk
counted to `walk_steps`, though it stops at its first step out of the set); the plan marks
these rows. An overruled bf16 stop costs more than the bound, up to 10 steps
and a forward each (rare; not counted). Where a previous run of the same model and setting
(the same `config_hash`) left `match` rows in the output folder, the expected count uses the
steps those pairs really took. Time = plain / forward rate + backward / step rate + jvp / jvp
rate + rows / row rate (a probe whose steps run at two precisions, `equivalence`, states its
parts: `Probe.timed_passes`), with rates measured now (`calibrate`) or from the rate table
(sweep/planning/rates.py).
The plan's rows, totals, JSON and table are in sweep/planning/table.py; the pairs per shard
come from the shard set (sweep/data/shardset.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sweep.planning.rates import Rates, table_rates
from sweep.data.shardset import ShardSet
from sweep.planning.table import Plan, Row
from sweep.probes.base import Passes, Probe
from sweep.run.spec import LoadedSpec, WorkUnit

PLAN_FILE = "plan.json"


def passes_per_pair(probe: str, params: Any, dims: tuple[int, int] | None = None) -> Passes:
    """One pair's encoder passes for a probe setting (validated params): see `Probe.passes_per_pair`."""
    return _probe(probe, params).passes_per_pair(dims)


def needs_dims(probe: str, params: Any) -> bool:
    """Whether the setting's count depends on the model's embedding and input sizes."""
    return _probe(probe, params).needs_dims()


def bound_note(probe: str, params: Any) -> str:
    """'' where `passes_per_pair` is exact; else why it is an upper bound."""
    return _probe(probe, params).bound_note()


def _probe(name: str, params: Any) -> Probe:
    from sweep.probes import PROBES

    if name not in PROBES:
        raise ValueError(f"no pass count for probe {name!r}")
    return PROBES[name](params)


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
    counts = _shard_pairs(loaded.shards, pairs_per_shard)
    uncounted = [shard for shard in loaded.shards if counts[shard] is None]
    probes: dict[tuple[str, str], Probe] = {(p.name, p.params_json()): p for p, _ in loaded.settings}
    store = _store(loaded) if previous else None
    seen = _steps_seen(store) if store is not None else {}
    done_ids = _done_units(store) if store is not None else set()
    dims: dict[tuple[str, str, str], tuple[int, int] | None] = {}
    groups: dict[tuple[str, str, str, str], list[WorkUnit]] = defaultdict(list)
    for unit in loaded.units:
        groups[(unit.model, unit.weights, unit.probe, unit.config_hash)].append(unit)

    rows: list[Row] = []
    longest: float | None = 0.0
    for (model, weights, probe_name, config_hash), units in groups.items():
        probe = probes[(probe_name, units[0].params_json)]
        per_shard = [counts[u.shard] for u in units]
        n_pairs = None if any(n is None for n in per_shard) else sum(per_shard)  # type: ignore[misc]
        rate = (rates or {}).get(model) or table_rates(model)
        dim = _dims(units[0], dims, rate) if probe.needs_dims() else None
        upper = probe.passes_per_pair(dim) if dim is not None or not probe.needs_dims() else None
        expected, n_seen = upper, 0
        if upper is not None and config_hash in seen:  # earlier rows of this very setting
            mean_steps, n_seen, confirmed = seen[config_hash]
            expected = probe.expected_passes(upper, mean_steps, confirmed)
        row = Row(model, weights, probe_name, config_hash, _setting(units[0].params), len(units), n_pairs,
                  upper, expected, n_seen, bound=probe.bound_note(), dims=dim)
        if rate is not None and upper is not None and expected is not None:
            row.seconds_per_pair = _timed(probe, upper, rate, units[0].compile)
            row.seconds_per_pair_expected = _timed(probe, expected, rate, units[0].compile)
            row.rate_source = rate.source
            if longest is not None:
                longest = max([longest, *(row.seconds_per_pair * (n or 0) for n in per_shard)])
        else:
            longest = None
        rows.append(row)
        transfer = _transfer_row(loaded, probe, row, per_shard, rate)
        if transfer is not None:
            rows.append(transfer)

    distinct = None if uncounted else sum(counts[s] or 0 for s in loaded.shards)
    unit_pairs = None if uncounted else sum(counts[u.shard] or 0 for u in loaded.units)
    return Plan(
        spec=loaded.source, units=len(loaded.units),
        units_done=sum(1 for u in loaded.units if u.unit_id in done_ids), shards=len(loaded.shards),
        pairs=distinct, unit_pairs=unit_pairs, rows=rows, gpus=max(1, gpus), longest_unit_s=longest,
        shards_uncounted=uncounted, calibrated=bool(rates),
        cpu=bool(rates) and not any(r.cuda for r in (rates or {}).values()),
    )


def _transfer_row(loaded: LoadedSpec, probe: Any, row: Row, per_shard: list[int | None], rate: Any) -> Row | None:
    """The transfer pass's passes for a setting whose probe stores matched images (issue 23):
    the probe states them per pair and model (`transfer_passes_per_pair`); seconds at A's rate
    (B's forwards cost what B's do: the estimate assumes models of A's size)."""
    if not loaded.spec.transfer or not getattr(probe, "matched_images", False):
        return None
    n_models = len({m.model_dump_json() for m in loaded.spec.models})
    per_pair = probe.transfer_passes_per_pair(n_models)
    out = Row(row.model, row.weights, "transfer", row.config_hash, f"{row.setting}; on {n_models} models",
              row.units * n_models, row.pairs, per_pair, per_pair,
              bound="only ok pairs are stored and evaluated; 3 forwards per pair and model (the matched image, its source and target)")
    if rate is not None:
        out.seconds_per_pair = out.seconds_per_pair_expected = _seconds(per_pair, rate, "fp32", False)
        out.rate_source = rate.source
    return out


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
    return (passes.plain / rate.forward + passes.backward / rate.step(precision, compiled) + passes.jvp / rate.jvp
            + passes.rows / rate.row())


def _timed(probe: Probe, passes: Passes, rate: Rates, compiled: bool) -> float:
    """Seconds for `passes` of `probe`, each part at the precision of its steps (`timed_passes`)."""
    return sum(_seconds(part, rate, precision, compiled) for part, precision in probe.timed_passes(passes, rate.cuda))


def _setting(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


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
    fp32 forward confirmed) over earlier `match` rows. (Reads the table itself until
    `RunStore.read(table, columns)`, the one reader of result tables, replaces the try block.)"""
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


__all__ = ["PLAN_FILE", "Passes", "Plan", "Row", "bound_note", "make_plan", "needs_dims", "passes_per_pair"]


def _shard_pairs(shards: list[str], pairs_per_shard: int | None) -> dict[str, int | None]:
    """Pairs in each shard (None: could not be counted): `pairs_per_shard` when given, else the
    shard set's manifest, else (a local tar) its headers; one manifest read per folder."""
    if pairs_per_shard is not None:
        return {shard: pairs_per_shard for shard in shards}
    sets: dict[str, ShardSet] = {}
    return {shard: ShardSet.of(shard, sets).pairs(shard) for shard in shards}
