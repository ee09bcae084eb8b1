"""`vitsweep plan SPEC`: count a sweep's work and estimate its time before running it.

    vitsweep plan imagenet-val.yaml --gpus 8 --pairs-per-shard 1000   # H100 rate table; shards not made yet
    vitsweep plan demo.yaml --calibrate               # rates measured now, on this device
    vitsweep plan spec.yaml --json                    # units, pairs, image_passes, seconds, gpu_hours, ...

Units and pairs are exact (the spec's expansion and the shards' manifests); passes are upper
bounds, with expected values where earlier results of the same setting lie in the output folder.
See sweep/planning/plan.py for what is counted and sweep/planning/rates.py for where each rate comes from.
"""

from __future__ import annotations

import argparse
import json

from sweep.errors import UserError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--gpus", type=int, default=1, help="devices the units are shared over (default 1)")
    parser.add_argument("--calibrate", action="store_true",
                        help="time a few passes of each model at the spec's batch size on this device "
                        "(else: the packaged H100 rate table)")
    parser.add_argument("--device", help="device for --calibrate (default: cuda if present, else cpu)")
    parser.add_argument("--out", help="run directory or URI whose earlier results give expected values "
                        "(default: the spec's `output`)")
    parser.add_argument("--pairs-per-shard", type=int, metavar="N",
                        help="assume N pairs per shard instead of reading the manifests (e.g. shards not reachable from here)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    from sweep.planning.plan import make_plan
    from sweep.run.spec import load_spec

    if args.gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {args.gpus}")
    if args.pairs_per_shard is not None and args.pairs_per_shard < 0:
        raise UserError(f"--pairs-per-shard must be at least 0, got {args.pairs_per_shard}")
    loaded = load_spec(args.spec, output=args.out)
    rates = None
    if args.calibrate:
        from sweep.planning.calibrate import calibrate

        try:
            rates = calibrate(loaded, device=args.device)
        except RuntimeError as err:
            raise UserError(f"--calibrate failed: {' '.join(str(err).split())[:200]}") from None
    plan = make_plan(loaded, gpus=args.gpus, rates=rates, pairs_per_shard=args.pairs_per_shard)
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.render())
    return 0
