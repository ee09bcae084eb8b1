"""`vitsweep run SPEC`: run a sweep spec on Ray and leave its results in a run directory.

    vitsweep run specs/demo.yaml --out runs/demo              # local Ray: one actor per CPU/GPU
    vitsweep run spec.yaml --address 10.0.0.1:6379            # join a running cluster
    ray job submit -- vitsweep run spec.yaml                  # inside a job: joins via RAY_ADDRESS

The spec format (models, probes and their parameter grids, shards, output, ...) is described in
the README's "Commands" section and at the top of sweep/run/spec.py; `vitsweep init DIR` writes
two complete examples (demo.yaml, imagenet-val.yaml) to edit.

Everything that can be checked is checked before Ray starts: the spec (model names, weights
files, embedding blocks, probe parameters), the shard set (every shard opens and holds pairs)
and the output (a new or empty folder, or a run of the same spec). More than
CONFIRM_UNITS units to run needs --yes.

The lifecycle (checks, lease, manifest, progress, Ray, labels pass) is sweep/run/driver.py.
One driver at a time: the run directory's lease (sweep/run/lease.py) refuses a second driver
while the first is alive, and is taken over once it is dead. The plan's one-line summary
(`vitsweep plan`) is printed first and kept as plan.json. When the units have finished, the
labels pass (`sweep.finished.labels`) computes the k-NN labels of every match and perturb row against
all the run's clean images (`vitsweep labels RUN` redoes it).

A rerun into the same directory skips finished units (and retries failed ones). Exit status:
0 when every unit finished, 1 when some unit failed for good (the failures are listed at the
end, and kept in the `units` table and progress.json), 2 for a bad spec, shard set, output or
command line, or a run directory another driver holds, 130 when interrupted by Ctrl-C or SIGTERM (`timeout`, `ray job stop`): finished
units are kept and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import sys

from sweep.errors import int_at_least
from sweep.run.driver import CONFIRM_UNITS, refuse_if_held, run_sweep
from sweep.run.spec import load_spec

INTERRUPTED = "interrupted; finished units are kept, rerun the same command to resume"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML; format: see above)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    parser.add_argument("--out", help="run directory or URI (default: the spec's `output`)")
    parser.add_argument("--actors", type=int_at_least(1), help="number of actors (default: one per GPU, else one per CPU)")
    parser.add_argument(
        "--device", choices=("auto", "gpu", "cpu"), default="auto",
        help="gpu: actors ask for one GPU each (wait for the autoscaler if none is up yet); "
        "cpu: one CPU slot each; auto: gpu when the cluster has GPUs",
    )
    parser.add_argument("--force", action="store_true", help="add to a run directory that holds a different spec")
    parser.add_argument("--yes", action="store_true", help=f"start even when more than {CONFIRM_UNITS} units are to run")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar: a line per finished unit (progress.json is still written)")


def run(args: argparse.Namespace) -> int:
    refuse_if_held(args.spec, args.out)  # in seconds: before the probes (and torch) are imported
    outcome = run_sweep(
        load_spec(args.spec, output=args.out),
        address=args.address,
        actors=args.actors,
        device=args.device,
        force=args.force,
        show_progress=False if args.no_progress else None,
        yes=args.yes,
    )
    print(outcome.describe())
    if outcome.labels:
        print(f"labels: {outcome.labels}")
    for failure in outcome.failures:
        print(f"failed unit {failure['unit']}: {failure['error']}")
    return 0 if outcome.units_failed == 0 else 1


if __name__ == "__main__":
    from sweep.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
