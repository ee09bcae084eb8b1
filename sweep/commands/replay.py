"""`vitsweep replay RUN --pair ID`: re-run one pair of a finished run and check its stored rows.

    vitsweep replay runs/demo --pair pair_00000003                  # every unit that measured it
    vitsweep replay runs/demo --pair pair_00000003 --probe match --json
    vitsweep replay s3://bucket/runs/demo --pair pair_00000003 --config 3f2a --out replay/

Prints, per unit, whether every stored number of the pair's row(s) is reproduced (bitwise when
the unit ran on the CPU and the replay does too; see sweep/finished/replay.py for the tolerance),
else the columns that differ and by how much. Writes the replayed images (src, tgt, adv, diff)
and replay.json into --out/<probe>-<config hash>/. Exit status: 0 agrees, 1 disagrees, 2 for a
bad run directory, pair or option.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sweep.errors import UserError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory or URI (s3://bucket/prefix)")
    parser.add_argument("--pair", required=True, help="pair id (as in the pairs table)")
    parser.add_argument("--probe", help="only the units of this probe (match, perturb, lipschitz, ...)")
    parser.add_argument("--config", help="only the units of this config_hash (a prefix is enough)")
    parser.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    parser.add_argument("--out", help="folder for the images and replay.json (default: replay-<pair id>)")
    parser.add_argument("--device", help="cpu | cuda (default: cpu when the unit ran on the CPU, else cuda if present)")
    parser.add_argument("--alone", action="store_true",
                        help="run only this pair, not the shard's pairs before it (faster; equal up to rounding, so not bitwise)")
    parser.add_argument("--rtol", type=float, help="relative tolerance for floats (default: 0 on the CPU, else 1e-4)")
    parser.add_argument("--atol", type=float, help="absolute tolerance for floats (default: 0 on the CPU, else 1e-6)")


def run(args: argparse.Namespace) -> int:
    for name in ("rtol", "atol"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            raise UserError(f"--{name} must be a number >= 0, got {value}")
    if args.device is not None and args.device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {args.device!r}")
    run_dir = args.run
    if "://" not in run_dir and not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    out = Path(args.out or f"replay-{args.pair}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")

    from sweep.finished.replay import replay_to_folder

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no CUDA device is available")
    report = replay_to_folder(run_dir, args.pair, out, probe=args.probe, config_hash=args.config, device=args.device,
                              rtol=args.rtol, atol=args.atol, alone=args.alone)
    data = report.to_json()
    if args.json:
        print(json.dumps(data))
    else:
        _summarise(data, out)
    return 0 if report.agrees else 1


def _summarise(data: dict[str, Any], out: Path) -> None:
    for unit in data["units"]:
        head = (f"{unit['probe']} {unit['config_hash']} ({unit['model']}, unit {unit['unit_id']}, stored on "
                f"{unit['stored_device']}, replayed on {unit['replay_device']}, rtol={unit['rtol']:g} atol={unit['atol']:g}):")
        if unit["agrees"]:
            print(f"{head} agrees: {unit['rows_stored']} row(s), {len(unit['compared'])} columns each")
        else:
            print(f"{head} DIFFERS in {len(unit['differences'])} value(s)")
            for d in unit["differences"][:20]:
                gap = "" if d["abs_diff"] is None else f" (|diff| {d['abs_diff']:.3g})"
                print(f"  row {d['row']} {d['column']}: stored {d['stored']!r}, replayed {d['replayed']!r}{gap}")
        if unit["not_replayed"]:
            print(f"  not compared (the probe does not produce them for one pair; k-NN labels come from the labels "
                  f"pass over the whole run): {', '.join(unit['not_replayed'])}")
    print(f"pair {data['pair_id']}: {'agrees' if data['agrees'] else 'DISAGREES'}; images and replay.json in {out}")
