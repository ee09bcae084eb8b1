"""Replay one pair of a finished run and compare every stored number of its rows.

    report = replay_pair("runs/demo", "pair-000003", probe="match")
    report.agrees, report.units[0].differences
    report = replay_to_folder("runs/demo", "pair-000003", "replay/")   # and its images, replay.json

The unit(s) that measured the pair are found in the run's `pairs` table (narrowed by probe and
config hash); each is re-run on that one pair exactly as the worker ran it: the unit's `units`
row gives model, weights, embedding point, head, probe parameters, shard, seed and batch size
(runs written before it stored seed and head: the run's spec.yaml's seed, the automatic head),
the pair is read from that shard through the same decoder, and the probe runs through the same `Probe.run` (every random draw is seeded by the run seed and the pair id,
so which pairs share a batch changes no random draw). To be exact to the bit, the replay also
feeds the probe the shard's pairs in read order with the unit's batch size, as the worker did,
and stops as soon as the pair's result comes out: a batched matrix product need not round a row
as the product of that row alone does, so the pair is given the same batch neighbours. `alone`
runs just the pair (faster for a pair deep in a big shard; equal up to rounding). On the CPU the
replay uses one torch thread, as a CPU actor does.

Every column of the stored table that the probe produces is compared, whatever the schema holds
(no column list here): floats within `|a - b| <= atol + rtol·|b|` (NaN equals NaN), lists element
by element, everything else exactly. Columns the probe does not produce for a single pair (k-NN
labels, which the labels pass computes against the whole run's bank, say) are listed as not
replayed. Default tolerance: bitwise
(rtol = atol = 0) when the unit ran on the CPU and the replay does too (not alone); otherwise
rtol 1e-4, atol 1e-6 (GPU kernels need not be bitwise reproducible across runs or devices).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import yaml

from sweep.errors import UserError
from sweep.files import atomic_write, dumps_json, json_safe
from sweep.run.store import RunStore
from sweep.schema import SCHEMAS, STATUS_OK, to_table

CPU_TOLERANCE = (0.0, 0.0)
DEVICE_TOLERANCE = (1e-4, 1e-6)
# Columns that say which unit and pair a row belongs to: selected on, not measured.
IDENTITY = frozenset({"run_id", "unit_id", "pair_id", "model", "weights", "embed", "probe", "config_hash", "params"})


@dataclass
class Difference:
    row: int
    column: str
    stored: Any
    replayed: Any
    abs_diff: float | None = None
    rel_diff: float | None = None


@dataclass
class UnitReplay:
    unit_id: str
    probe: str
    config_hash: str
    model: str
    weights: str
    embed: str
    params: dict[str, Any]
    shard: str
    seed: int
    batch_size: int
    stored_device: str | None
    replay_device: str
    rtol: float
    atol: float
    rows_stored: int
    rows_replayed: int
    compared: list[str]
    not_replayed: list[str]
    differences: list[Difference] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    result: Any = None  # the PairResult (images for the caller), not serialised

    @property
    def agrees(self) -> bool:
        return not self.differences and self.rows_stored == self.rows_replayed

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "result"}
        out["agrees"] = self.agrees
        return json_safe(out)


@dataclass
class ReplayReport:
    run: str
    run_id: str | None
    pair_id: str
    units: list[UnitReplay]

    @property
    def agrees(self) -> bool:
        return all(u.agrees for u in self.units)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "run_id": self.run_id, "pair_id": self.pair_id, "agrees": self.agrees,
                "units": [u.to_json() for u in self.units]}


def find_units(store: RunStore, pair_id: str, probe: str | None = None, config_hash: str | None = None) -> list[dict[str, Any]]:
    """The finished `units` rows of the units that measured `pair_id` (UserError if none)."""
    pairs = store.read("pairs", ["unit_id", "probe", "config_hash"], pc.field("pair_id") == pair_id).to_pylist()
    if not pairs:
        raise UserError(f"{store.root}: no pair {pair_id!r} in this run's pairs table")
    chosen = [p for p in pairs if (probe is None or p["probe"] == probe) and
              (config_hash is None or p["config_hash"].startswith(config_hash))]
    if not chosen:
        have = sorted({f"{p['probe']} {p['config_hash']}" for p in pairs})
        raise UserError(f"pair {pair_id!r} was not measured with the probe/config asked for (it was with: {', '.join(have)})")
    ids = sorted({p["unit_id"] for p in chosen})
    units = store.read("units", filter=pc.field("unit_id").isin(ids)).to_pylist()
    return sorted((u for u in units if u["status"] == STATUS_OK), key=lambda u: (u["probe"], u["config_hash"]))


def replay_pair(
    run: str,
    pair_id: str,
    *,
    probe: str | None = None,
    config_hash: str | None = None,
    device: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    alone: bool = False,
) -> ReplayReport:
    """Re-run `pair_id` for every matching unit of `run` and compare with the stored rows."""
    store = RunStore(run)
    spec_text = store.read_text("spec.yaml")
    if spec_text is None:
        store.check_bucket()
        raise UserError(f"{run}: no spec.yaml (not a run directory?)")
    spec = yaml.safe_load(spec_text)
    manifest = store.read_json("manifest.json") or {}
    units = find_units(store, pair_id, probe, config_hash)
    if not units:
        raise UserError(f"pair {pair_id!r}: its unit(s) did not finish ok, nothing to replay")
    report = ReplayReport(run=store.root, run_id=manifest.get("run_id"), pair_id=pair_id, units=[])
    for unit in units:
        report.units.append(_replay_unit(store, unit, pair_id, spec, device=device, rtol=rtol, atol=atol, alone=alone))
    return report


def replay_to_folder(run: str, pair_id: str, out: str | Path, **options: Any) -> ReplayReport:
    """`replay_pair(run, pair_id, **options)`, and per unit the replayed images (src, tgt, adv and
    their amplified difference as PNG) and replay.json in `out/<probe>-<config hash>/`."""
    report = replay_pair(run, pair_id, **options)
    for unit, name in zip(report.units, replay_folders(report.units)):
        folder = Path(out) / name
        unit.images = _write_images(unit, folder)
        atomic_write(folder / "replay.json", dumps_json(unit.to_json(), indent=2) + "\n")
    return report


def replay_folders(units: list[UnitReplay]) -> list[str]:
    """Each unit's folder name under the replay output: `<probe>-<config hash>`, with
    `-<unit id>` added where two units share it (a run rerun with `--force` and another seed
    holds units of both seeds with one config hash), so no two units write to one folder."""
    names = [f"{u.probe}-{u.config_hash[:12]}" for u in units]
    return [f"{name}-{u.unit_id[:12]}" if names.count(name) > 1 else name for u, name in zip(units, names)]


def _write_images(unit: UnitReplay, folder: Path) -> dict[str, str]:
    from sweep.data.images import amplified_difference, to_uint8_image

    folder.mkdir(parents=True, exist_ok=True)
    images = dict(unit.result.images) if unit.result is not None else {}
    if "adv" in images and "src" in images:
        images["diff"] = amplified_difference(images["adv"], images["src"])
    written = {}
    for name, pixels in images.items():
        path = folder / f"{name}.png"
        to_uint8_image(pixels).save(path)
        written[name] = str(path)
    return written


def _replay_unit(
    store: RunStore, unit: dict[str, Any], pair_id: str, spec: dict[str, Any], *,
    device: str | None, rtol: float | None, atol: float | None, alone: bool,
) -> UnitReplay:
    import torch

    from sweep.encoders import load_encoder
    from sweep.probes import build_probe

    stored_device = unit.get("device") or ""
    ran_on_cpu = stored_device.startswith("cpu")
    if device is None:
        device = "cpu" if ran_on_cpu or not torch.cuda.is_available() else "cuda"
    default = CPU_TOLERANCE if ran_on_cpu and device == "cpu" and not alone else DEVICE_TOLERANCE
    rtol = default[0] if rtol is None else rtol
    atol = default[1] if atol is None else atol

    params = json.loads(unit["params"] or "{}")
    probe = build_probe(unit["probe"], params)
    table = probe.name
    stored = store.read(table, unit=(unit["probe"], unit["model"], unit["unit_id"])).to_pylist()  # as written
    stored_rows = [r for r in stored if r["pair_id"] == pair_id]

    encoder = load_encoder(unit["model"], unit["weights"], unit["embed"], device=device,
                           head=unit.get("head") or "auto")
    from sweep.run.zeroshot import zero_shot_of_unit  # zs_* columns: the classifier the unit used

    encoder.zero_shot = zero_shot_of_unit(store, spec, unit, probe, encoder)
    # the unit's own seed (a rerun with --force and a new seed leaves units of the old seed
    # beside the new spec.yaml); runs written before the units table stored it: the spec's
    seed = int(unit["seed"]) if unit.get("seed") is not None else int(spec.get("seed", 0))
    batch_size = int(unit.get("batch_size") or spec.get("batch_size", 16))
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # as in a CPU actor (one core; Ray sets OMP_NUM_THREADS=1)
    try:
        record, result = _run_pair(probe, encoder, unit["shard"], pair_id, batch_size, seed, alone=alone)
    finally:
        torch.set_num_threads(threads)

    error = record.error if record.error is not None else (result.error if result is not None else "no result")
    base = {"pair_id": pair_id, "src_key": record.src_key, "tgt_key": record.tgt_key,
            "src_label": record.src_label, "tgt_label": record.tgt_label,
            "status": "ok" if error is None else "error", "error": error}
    produced = [dict(row) for row in result.rows] if result is not None and error is None else [{}]
    schema = SCHEMAS[table]
    replayed_rows = [{**row, **base} for row in produced]
    produced_columns = set().union(*produced) | set(base)
    replayed = to_table(table, [{k: v for k, v in r.items() if k in schema.names} for r in replayed_rows]).to_pylist()
    compared = [c for c in schema.names if c in produced_columns and c not in IDENTITY]
    not_replayed = [c for c in schema.names if c not in produced_columns and c not in IDENTITY]

    out = UnitReplay(
        unit_id=unit["unit_id"], probe=unit["probe"], config_hash=unit["config_hash"], model=unit["model"],
        weights=unit["weights"], embed=unit["embed"], params=params, shard=unit["shard"], seed=seed,
        batch_size=batch_size, stored_device=stored_device or None, replay_device=str(encoder.device),
        rtol=rtol, atol=atol, rows_stored=len(stored_rows), rows_replayed=len(replayed),
        compared=compared, not_replayed=not_replayed, result=result,
    )
    if len(stored_rows) != len(replayed):
        out.differences.append(Difference(-1, "(rows)", len(stored_rows), len(replayed)))
    for i, (s, r) in enumerate(zip(stored_rows, replayed)):
        for column in compared:
            diff = compare_values(s.get(column), r.get(column), rtol, atol)
            if diff is not None:
                out.differences.append(Difference(i, column, s.get(column), r.get(column), *diff))
    if result is not None and error is None and "singular_values" in result.extra:  # J was built: its spectrum too
        _compare_spectrum(store, unit, pair_id, result, out)
    return out


def _compare_spectrum(store: Any, unit: dict[str, Any], pair_id: str, result: Any, out: UnitReplay) -> None:
    """The pair's `spectrum` row (every singular value of J) against the replayed one."""
    import torch

    column = "spectrum.singular_values"
    stored = [r for r in store.read("spectrum", unit=(unit["probe"], unit["model"], unit["unit_id"])).to_pylist()
              if r["pair_id"] == pair_id]
    replayed = [float(v) for v in torch.as_tensor(result.extra["singular_values"]).double().tolist()]
    out.compared.append(column)
    if not stored:
        out.differences.append(Difference(-1, column, None, replayed))
        return
    diff = compare_values(stored[0]["singular_values"], replayed, out.rtol, out.atol)
    if diff is not None:
        out.differences.append(Difference(0, column, stored[0]["singular_values"], replayed, *diff))


def _run_pair(probe: Any, encoder: Any, shard: str, pair_id: str, batch_size: int, seed: int, *, alone: bool) -> tuple[Any, Any]:
    """(the pair's shard record, its PairResult or None when it did not decode).

    Not alone: the shard's pairs go through the probe in read order, exactly as in the worker,
    until the pair's result comes out, so it shares its batches with the same neighbours (a
    batched matrix product need not round a row the same way as a product of that row alone).
    Alone: only the pair (fast; equal up to rounding)."""
    from sweep.data.shards import read_pairs
    from sweep.probes.base import PairInput

    found: list[Any] = []

    def inputs() -> Any:
        for rec in read_pairs(shard, encoder.preprocess, workers=0):
            if rec.pair_id == pair_id:
                found.append(rec)
                if rec.error is not None:  # did not decode: nothing to run
                    return
            elif alone:
                continue
            if rec.error is None:
                yield PairInput(rec.pair_id, rec.src, rec.tgt, rec.src_label, rec.tgt_label)
            if alone and found:
                return

    for result in probe.run(encoder, inputs(), batch_size=batch_size, seed=seed):
        if result.pair_id == pair_id:
            return found[0], result
    if not found:
        raise UserError(f"pair {pair_id!r} is not in its shard {shard} any more")
    return found[0], None


def compare_values(stored: Any, replayed: Any, rtol: float, atol: float) -> tuple[float | None, float | None] | None:
    """None when equal within tolerance, else (abs_diff, rel_diff) (None, None for non-numbers)."""
    if isinstance(stored, list) or isinstance(replayed, list):
        if not isinstance(stored, list) or not isinstance(replayed, list) or len(stored) != len(replayed):
            return (None, None)
        worst: tuple[float | None, float | None] | None = None
        for a, b in zip(stored, replayed):
            d = compare_values(a, b, rtol, atol)
            if d is not None and (worst is None or (d[0] or math.inf) > (worst[0] or 0)):
                worst = d
        return worst
    if isinstance(stored, float) or isinstance(replayed, float):
        if stored is None or replayed is None or isinstance(stored, bool) or isinstance(replayed, bool):
            return (None, None)
        a, b = float(stored), float(replayed)
        if math.isnan(a) and math.isnan(b) or a == b:
            return None
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
            return (math.inf, math.inf)
        gap = abs(a - b)
        if gap <= atol + rtol * abs(a):
            return None
        return (gap, gap / abs(a) if a else math.inf)
    if stored == replayed:
        return None
    if isinstance(stored, int) and isinstance(replayed, int) and not isinstance(stored, bool):
        return (float(abs(stored - replayed)), None)
    return (None, None)
