"""`vitsweep run SPEC`: run a sweep spec on Ray and leave its results in a run directory.

    vitsweep run demo.yaml --out runs/demo                    # local Ray (demo.yaml: `vitsweep init`)
    vitsweep run spec.yaml --address 10.0.0.1:6379            # join a running cluster
    ray job submit -- vitsweep run spec.yaml                  # inside a job: joins via RAY_ADDRESS

A rerun into the same directory skips finished units (and retries failed ones). One driver at a
time: the run directory's lease (sweep/run/lease.py) refuses a second driver while the first is
alive, and is taken over once it is dead. Exit status: 0 when every unit finished, 1 when some
unit failed for good (its error is in the `units` table and progress.json), 2 for a bad spec or
command line or a run directory another driver holds, 130 when interrupted.
When the units have finished, the labels pass (`sweep.run.labels`) computes the k-NN labels of
every match and perturb row against all the run's clean images (`vitsweep labels RUN` redoes it).
"""

from __future__ import annotations

import _thread
import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from sweep.errors import UserError
from sweep.run.lease import Lease
from sweep.run.manifest import MANIFEST_FILE, finish_run, prepare_run
from sweep.run.progress import Progress
from sweep.schema import to_table
from sweep.run.spec import LoadedSpec, WorkUnit, load_spec
from sweep.run.store import RunStore


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    parser.add_argument("--out", help="run directory or URI (default: the spec's `output`)")
    parser.add_argument("--actors", type=int, help="number of actors (default: one per GPU, else one per CPU)")
    parser.add_argument(
        "--device", choices=("auto", "gpu", "cpu"), default="auto",
        help="gpu: actors ask for one GPU each (wait for the autoscaler if none is up yet); "
        "cpu: one CPU slot each; auto: gpu when the cluster has GPUs",
    )
    parser.add_argument("--force", action="store_true", help="add to a run directory that holds a different spec")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (progress.json is still written)")


def run(args: argparse.Namespace) -> int:
    _refuse_if_held(args.spec, args.out)  # in seconds: before the probes (and torch) are imported
    loaded = load_spec(args.spec, output=args.out)
    outcome = execute(
        loaded,
        address=args.address,
        actors=args.actors,
        device=args.device,
        force=args.force,
        show_progress=False if args.no_progress else None,
    )
    print(outcome.describe())
    return 0 if outcome.units_failed == 0 else 1


def _refuse_if_held(spec_path: str, out: str | None) -> None:
    """Stop a second driver before the slow part of start-up. Problems with the spec itself are
    left to load_spec, which reports them properly."""
    import yaml

    from sweep.run.lease import check_free

    if out is None:
        try:
            data = yaml.safe_load(Path(spec_path).read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return
        out = data.get("output") if isinstance(data, dict) else None
    if isinstance(out, str) and out:
        check_free(RunStore(out))


@dataclass
class Outcome:
    run_dir: str
    run_id: str
    units_total: int
    units_skipped: int
    units_done: int
    units_failed: int
    pairs_done: int
    pairs_error: int
    seconds: float
    labels: str = ""  # what the labels pass did (one line per model setting)

    def describe(self) -> str:
        failed = f", {self.units_failed} failed" if self.units_failed else ""
        text = (
            f"run {self.run_id}: {self.units_done}/{self.units_total} units done "
            f"({self.units_skipped} already done{failed}), {self.pairs_done} pairs ok, "
            f"{self.pairs_error} pairs with errors, {self.seconds:.1f} s -> {self.run_dir}"
        )
        return f"{text}\nlabels: {self.labels}" if self.labels else text


def execute(
    loaded: LoadedSpec,
    *,
    address: str | None = None,
    actors: int | None = None,
    device: str = "auto",
    force: bool = False,
    show_progress: bool | None = None,
) -> Outcome:
    """Run every unfinished unit of `loaded` into its output directory."""
    if not loaded.spec.output:
        raise UserError(f"{loaded.source}: no output directory: set `output` in the spec or pass --out")
    if actors is not None and actors < 1:
        raise UserError(f"--actors must be at least 1, got {actors}")
    store = RunStore(loaded.spec.output)
    lease = _take_lease(store)  # before anything is written: a second driver stops here
    try:
        return _execute_leased(loaded, store, lease, address=address, actors=actors, device=device, force=force,
                               show_progress=show_progress)
    finally:
        lease.release()


def _take_lease(store: RunStore) -> Lease:
    """The run directory's lease (LeaseHeld, exit 2, names a live holder); a dead holder's lease
    is taken over and said so on stderr. Losing the lease later stops this driver."""
    lease = Lease.acquire(store)  # the run id is added once prepare_run has it
    if lease.took_over:
        dead = lease.took_over
        print(
            f"vitsweep run: took over the lease of a dead driver ({dead.get('host')} pid {dead.get('pid')}, "
            f"last heartbeat {dead.get('age_s')} s ago)",
            file=sys.stderr,
        )

    in_main_thread = threading.current_thread() is threading.main_thread()

    def lost(message: str) -> None:
        print(f"vitsweep run: {message}; stopping this driver", file=sys.stderr)
        if in_main_thread:  # Ctrl-C's path: finished units stay, the manifest says "interrupted"
            _thread.interrupt_main()

    lease.start_heartbeat(on_lost=lost)
    return lease


def _execute_leased(
    loaded: LoadedSpec,
    store: RunStore,
    lease: Lease,
    *,
    address: str | None,
    actors: int | None,
    device: str,
    force: bool,
    show_progress: bool | None,
) -> Outcome:
    manifest = prepare_run(store, loaded, force=force)
    run_id = manifest["run_id"]
    lease.set_run_id(run_id)
    if lease.took_over:
        manifest["lease_takeover"] = lease.took_over
        store.write_json(MANIFEST_FILE, manifest)
    store.clean_tmp()
    from sweep.run.plan import record_plan  # plan.json: what the Runs page shows beside the progress

    plan = record_plan(loaded, store)
    if plan is not None:
        print(plan.summary(with_wall=False), flush=True)
    status = store.unit_status()
    todo = [u for u in loaded.units if status.get(u.unit_id) != "ok"]
    progress = Progress(
        store, run_id, units_total=len(loaded.units), units_skipped=len(loaded.units) - len(todo), show=show_progress
    )
    state, extra, labels = "failed", {}, ""
    main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None  # `ray job stop`
    try:
        if todo:
            extra = _distribute(loaded, todo, store, run_id, progress, address=address, actors=actors, device=device)
        if todo or not store.exists("labels.json"):
            labels = _label(store)
        state = "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if lease.lost:  # another driver holds the run now: its progress.json and manifest stay
            progress.bar.close()
        else:
            progress.finish(state)
            finish_run(store, manifest, state, **extra)
    return Outcome(
        run_dir=store.root,
        run_id=run_id,
        units_total=len(loaded.units),
        units_skipped=progress.units_skipped,
        units_done=progress.units_done,
        units_failed=progress.units_failed,
        pairs_done=progress.pairs_done,
        pairs_error=progress.pairs_error,
        seconds=progress.elapsed_s,
        labels=labels,
    )


def _label(store: RunStore) -> str:
    """The labels pass over every finished unit (in this process, after Ray has shut down)."""
    from sweep.run.labels import label_run

    if not store.unit_status():
        return ""
    try:
        return label_run(store).describe().replace("\n", "\n  ")
    except UserError as err:  # e.g. no unit finished: the units' own outcome still stands
        return f"not computed ({err}); run `vitsweep labels {store.root}` to retry"


def _distribute(
    loaded: LoadedSpec,
    todo: list[WorkUnit],
    store: RunStore,
    run_id: str,
    progress: Progress,
    *,
    address: str | None,
    actors: int | None,
    device: str,
) -> dict[str, Any]:
    from sweep.run import distribute  # Ray is imported only when there is work to do
    from sweep.run.worker import UnitSummary, units_row

    local_slots = actors or os.cpu_count() or 1
    cluster = distribute.connect(address, num_cpus=local_slots)
    use_gpu = device == "gpu" or (device == "auto" and cluster.gpus >= 1)
    if device == "cpu" and cluster.cpus < 1:
        raise UserError("--device cpu, but the cluster has no CPU slots")
    n_actors = actors or max(1, int(cluster.gpus if use_gpu else cluster.cpus))
    n_actors = min(n_actors, len(todo))

    def on_done(summary: UnitSummary) -> None:
        progress.unit_done(summary.n_pairs, summary.n_error)

    def on_failed(unit: WorkUnit, error: str, attempts: int) -> None:
        store.remove_unit(unit.probe, unit.model, unit.unit_id)  # no partial rows of a failed unit
        summary = UnitSummary(unit.unit_id, "error", error=error, attempts=attempts)
        row = units_row(unit, run_id, summary, None, datetime.now(timezone.utc))
        store.write_unit_tables(unit.probe, unit.model, unit.unit_id, {"units": to_table("units", [row])})
        progress.unit_failed(unit.unit_id, error)

    sweep = distribute.Sweep(
        todo,
        run_root=store.root,
        run_id=run_id,
        actors=n_actors,
        use_gpu=use_gpu,
        max_attempts=loaded.spec.max_attempts,
        on_done=on_done,
        on_failed=on_failed,
        on_retry=lambda unit, error, attempt: progress.unit_retry(unit.unit_id, error),
    )
    try:
        sweep.start()
        sweep.run()
    finally:
        infos = sweep.actor_infos()
        sweep.stop()
        distribute.shutdown()
    return {
        "devices": sorted({f"{i.get('host')}: {i.get('device')}" for i in infos}),
        "cluster": {"address": cluster.address, "nodes": cluster.nodes, "cpus": cluster.cpus, "gpus": cluster.gpus,
                    "actors": n_actors, "actor_device": "gpu" if use_gpu else "cpu"},
    }


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    from sweep.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
