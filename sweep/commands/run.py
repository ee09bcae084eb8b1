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

One driver at a time: the run directory's lease (sweep/run/lease.py) refuses a second driver
while the first is alive, and is taken over once it is dead. The plan's one-line summary
(`vitsweep plan`) is printed first and kept as plan.json. When the units have finished, the
labels pass (`sweep.run.labels`) computes the k-NN labels of every match and perturb row against
all the run's clean images (`vitsweep labels RUN` redoes it).

A rerun into the same directory skips finished units (and retries failed ones). Exit status:
0 when every unit finished, 1 when some unit failed for good (the failures are listed at the
end, and kept in the `units` table and progress.json), 2 for a bad spec, shard set, output or
command line, or a run directory another driver holds, 130 when interrupted by Ctrl-C or SIGTERM (`timeout`, `ray job stop`): finished
units are kept and rerunning the same command resumes.
"""

from __future__ import annotations

import _thread
import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from sweep.errors import UserError, int_at_least
from sweep.run.lease import LEASE_FILE, Lease
from sweep.run.manifest import MANIFEST_FILE, check_output, finish_run, prepare_run
from sweep.run.progress import Progress
from sweep.schema import to_table
from sweep.run.spec import LoadedSpec, WorkUnit, load_spec
from sweep.run.store import RunStore


INTERRUPTED = "interrupted; finished units are kept, rerun the same command to resume"
CONFIRM_UNITS = 1000  # a sweep with more units to run than this needs --yes


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
    _refuse_if_held(args.spec, args.out)  # in seconds: before the probes (and torch) are imported
    loaded = load_spec(args.spec, output=args.out)
    outcome = execute(
        loaded,
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


def _refuse_if_held(spec_path: str, out: str | None) -> None:
    """Stop a second driver before the slow part of start-up. Problems with the spec itself are
    left to load_spec, which reports them properly."""
    import yaml

    from sweep.run.lease import LeaseHeld, check_free

    if out is None:
        try:
            data = yaml.safe_load(Path(spec_path).read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return
        out = data.get("output") if isinstance(data, dict) else None
    if isinstance(out, str) and out:
        try:
            check_free(RunStore(out))
        except LeaseHeld:
            raise
        except Exception:  # an output that is a file, unreachable, ...: check_output says it properly
            return


@dataclass
class Outcome:
    """What a run did; the counts are over the whole run (earlier invocations included)."""

    run_dir: str
    run_id: str
    units_total: int
    units_skipped: int
    units_done: int
    units_failed: int
    pairs_done: int
    pairs_error: int
    seconds: float
    failures: list[dict[str, str]] = field(default_factory=list)
    labels: str = ""  # what the labels pass did (one line per model setting)

    def describe(self) -> str:
        failed = f", {self.units_failed} failed" if self.units_failed else ""
        return (
            f"run {self.run_id}: {self.units_done}/{self.units_total} units done "
            f"({self.units_skipped} already done{failed}), {self.pairs_done} pairs ok, "
            f"{self.pairs_error} pairs with errors, {self.seconds:.1f} s -> {self.run_dir}"
        )


def execute(
    loaded: LoadedSpec,
    *,
    address: str | None = None,
    actors: int | None = None,
    device: str = "auto",
    force: bool = False,
    show_progress: bool | None = None,
    yes: bool = True,
    allow_in_output: tuple[str, ...] = (),
) -> Outcome:
    """Run every unfinished unit of `loaded` into its output directory.

    Order: check the output, the done units and the shard set (nothing written); start or join
    Ray when there is work; only then write spec.yaml and manifest.json, so a refused run or a
    failed connection leaves no run folder behind. `allow_in_output`: names the output folder
    may hold without being a run yet (the demo's shards/)."""
    if not loaded.spec.output:
        raise UserError(f"{loaded.source}: no output directory: set `output` in the spec or pass --out")
    if actors is not None and actors < 1:
        raise UserError(f"--actors must be at least 1, got {actors}")
    store = RunStore(loaded.spec.output)
    # a lease.json alone is a driver that died before writing its manifest: taken over below
    check_output(store, loaded, force=force, allow=(*allow_in_output, LEASE_FILE))
    status, done_pairs, done_errors = _unit_status(store)
    todo = [u for u in loaded.units if status.get(u.unit_id) != "ok"]
    if len(todo) > CONFIRM_UNITS and not yes:
        raise UserError(
            f"{len(todo)} units to run ({len(loaded.units)} in the spec); check the grid, then rerun with --yes"
        )
    if todo:
        _check_shard_set(sorted({u.shard for u in todo}))
    done = [u for u in loaded.units if status.get(u.unit_id) == "ok"]
    plan = _plan(loaded)
    if plan is not None:
        print(plan.summary(with_wall=False), flush=True)

    state, labels = "failed", ""
    lease: Lease | None = None
    manifest: dict[str, Any] | None = None
    progress: Progress | None = None
    record: dict[str, Any] = {}  # devices and cluster, filled as the sweep learns them
    main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None  # `ray job stop`
    distribute = None
    try:
        if todo:
            from sweep.run import distribute  # Ray is imported only when there is work to do

            cluster = distribute.connect(address, num_cpus=actors or os.cpu_count() or 1)
            if main_thread:  # ray.init installs its own SIGTERM handler (abort, exit 134): ours again
                signal.signal(signal.SIGTERM, _raise_interrupt)
            actor_plan = _plan_actors(cluster, todo, actors=actors, device=device)
            if loaded.spec.compile and not actor_plan["use_gpu"]:
                print("note: compile: true is ignored on CPU actors (torch.compile pays off on GPUs only)",
                      file=sys.stderr)
                todo = [replace(u, compile=False) for u in todo]
        lease = _take_lease(store)  # a live second driver stops here (LeaseHeld, exit 2)
        manifest = prepare_run(store, loaded, force=force)
        lease.set_run_id(manifest["run_id"])
        if lease.took_over:
            manifest["lease_takeover"] = lease.took_over
            store.write_json(MANIFEST_FILE, manifest)
        store.clean_tmp()
        if plan is not None:
            _record_plan(plan, store)
        progress = Progress(
            store, manifest["run_id"], units_total=len(loaded.units), units_skipped=len(done),
            pairs_skipped=sum(done_pairs.get(u.unit_id, 0) for u in done),
            pairs_error_skipped=sum(done_errors.get(u.unit_id, 0) for u in done),
            show=show_progress,
        )
        if todo:
            _sweep(loaded, todo, store, manifest["run_id"], progress, cluster, actor_plan, record)
            distribute.shutdown()  # the labels pass runs in this process, without Ray
            distribute = None
        if todo or not store.exists("labels.json"):
            labels = _label_run(store)
        state = "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        lost = lease is not None and lease.lost  # another driver holds the run now: its files stay
        if progress is not None:
            if lost:
                progress.bar.close()
            else:
                progress.finish(state)
        if manifest is not None and not lost:
            totals = {} if progress is None else {
                "units_total": progress.units_total, "units_done": progress.units_done,
                "units_failed": progress.units_failed, "pairs_done": progress.pairs_done,
                "pairs_error": progress.pairs_error,
            }
            ran = {} if progress is None else {
                "units_run": progress.units_done - progress.units_skipped, "units_failed": progress.units_failed,
                "pairs": progress.pairs_now,
            }
            finish_run(store, manifest, state, devices=record.get("devices"), cluster=record.get("cluster"),
                       totals=totals, this_invocation=ran)
        if distribute is not None:
            distribute.shutdown()
        if lease is not None:
            lease.release()
    assert progress is not None and manifest is not None
    return Outcome(
        run_dir=store.root,
        run_id=manifest["run_id"],
        units_total=len(loaded.units),
        units_skipped=progress.units_skipped,
        units_done=progress.units_done,
        units_failed=progress.units_failed,
        pairs_done=progress.pairs_done,
        pairs_error=progress.pairs_error,
        seconds=progress.elapsed_s,
        failures=list(progress.failures),
        labels=labels,
    )


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


def _label_run(store: RunStore) -> str:
    """The labels pass over every finished unit (in this process, after Ray has shut down)."""
    from sweep.run.labels import label_run

    if not store.unit_status():
        return ""
    try:
        return label_run(store).describe().replace("\n", "\n  ")
    except UserError as err:  # e.g. no unit finished: the units' own outcome still stands
        return f"not computed ({err}); run `vitsweep labels {store.root}` to retry"


def _plan(loaded: LoadedSpec) -> Any:
    """The run's plan (`vitsweep plan`), or None when it cannot be made: a plan never stops a run."""
    from sweep.run.plan import make_plan

    try:
        return make_plan(loaded)
    except Exception:
        return None


def _record_plan(plan: Any, store: RunStore) -> None:
    """plan.json: what the dashboard's Runs page shows beside the progress."""
    from sweep.run.plan import PLAN_FILE

    try:
        store.write_json(PLAN_FILE, plan.to_json())
    except OSError:
        pass


def _unit_status(store: RunStore) -> tuple[dict[str, str], dict[str, int], dict[str, int]]:
    """(status, ok pairs, error pairs) per unit id from the `units` table. An unreadable units
    file (a disk error, a hand-edited file) is reported, moved aside as `<name>.corrupt` (readers
    glob `*.parquet`) and its unit run again."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    columns = ["unit_id", "status", "n_pairs", "n_error"]
    files = [f.path for f in store._files("results/units") if f.path.endswith(".parquet")]
    rows: list[dict[str, Any]] = []
    try:  # one read of all files; only when one of them is bad, file by file
        if files:
            rows = ds.dataset(files, filesystem=store.fs, format="parquet").to_table(columns=columns).to_pylist()
    except (pa.ArrowException, OSError):
        rows = []
        for path in files:
            try:
                with store.fs.open_input_file(path) as handle:
                    rows.extend(pq.read_table(handle, columns=columns).to_pylist())
            except (pa.ArrowException, OSError) as err:
                reason = " ".join(str(err).split())[:200]
                print(f"warning: {path}: unreadable units file ({reason}); moved to {path}.corrupt, "
                      "its unit will be run again", file=sys.stderr)
                if store.fs.get_file_info(path).type == pafs.FileType.File:
                    store.fs.move(path, path + ".corrupt")
    status = {r["unit_id"]: r["status"] for r in rows}
    ok_pairs = {r["unit_id"]: int(r["n_pairs"] or 0) - int(r["n_error"] or 0) for r in rows}
    error_pairs = {r["unit_id"]: int(r["n_error"] or 0) for r in rows}
    return status, ok_pairs, error_pairs


def _check_shard_set(shards: list[str]) -> None:
    """Every shard opens as a tar and its first sample is a pair (json + src + tgt image), as
    `vitsweep shards check` would find; a full decode is left to the sweep (a bad image becomes
    an error row). Read in parallel: for remote shards this is one short read each."""
    from concurrent.futures import ThreadPoolExecutor

    from sweep.data.shards import iter_samples

    def first_problem(url: str) -> str | None:
        sample = next(iter(iter_samples(url)), None)
        if sample is None:
            return f"{url}: holds no samples"
        if sample.get("__key__") is None and "__error__" in sample:
            return f"{sample['__error__']}"
        fields = {k.split(".", 1)[0] for k in sample if not k.startswith("__")}
        missing = [f for f in ("json", "src", "tgt") if f not in fields]
        if missing:
            found = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"
            return f"{url}: not a pair shard (its first sample {sample['__key__']!r} has {found}, no {'/'.join(missing)})"
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(shards))) as pool:
        problems = [p for p in pool.map(first_problem, shards) if p]
    if problems:
        more = f" (and {len(problems) - 1} more bad shard(s))" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; `vitsweep shards check` describes a shard set")


def _plan_actors(cluster: Any, todo: list[WorkUnit], *, actors: int | None, device: str) -> dict[str, Any]:
    use_gpu = device == "gpu" or (device == "auto" and cluster.gpus >= 1)
    if device == "cpu" and cluster.cpus < 1:
        raise UserError("--device cpu, but the cluster has no CPU slots")
    n_actors = actors or max(1, int(cluster.gpus if use_gpu else cluster.cpus))
    return {"use_gpu": use_gpu, "n_actors": min(n_actors, len(todo))}


def _sweep(
    loaded: LoadedSpec,
    todo: list[WorkUnit],
    store: RunStore,
    run_id: str,
    progress: Progress,
    cluster: Any,
    plan: dict[str, Any],
    record: dict[str, Any],
) -> None:
    from sweep.run import distribute
    from sweep.run.worker import UnitSummary, units_row

    use_gpu, n_actors = plan["use_gpu"], plan["n_actors"]
    record["cluster"] = {"address": cluster.address, "nodes": cluster.nodes, "cpus": cluster.cpus,
                         "gpus": cluster.gpus, "actors": n_actors, "actor_device": "gpu" if use_gpu else "cpu"}
    by_id = {u.unit_id: u for u in todo}

    def on_done(summary: UnitSummary) -> None:
        unit = by_id.get(summary.unit_id)
        progress.unit_done(summary.n_pairs, summary.n_error, _label(unit) if unit else summary.unit_id)

    def on_failed(unit: WorkUnit, error: str, attempts: int) -> None:
        store.remove_unit(unit.probe, unit.model, unit.unit_id)  # no partial rows of a failed unit
        summary = UnitSummary(unit.unit_id, "error", error=error, attempts=attempts)
        row = units_row(unit, run_id, summary, None, datetime.now(timezone.utc))
        store.write_unit_tables(unit.probe, unit.model, unit.unit_id, {"units": to_table("units", [row])})
        progress.unit_failed(unit.unit_id, error, _label(unit))

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
        record["devices"] = sorted({f"{i.get('host')}: {i.get('device')}" for i in sweep.actor_infos()})
        sweep.stop()


def _label(unit: WorkUnit) -> str:
    shard = unit.shard.rstrip("/").rsplit("/", 1)[-1]
    return f"{unit.unit_id} ({unit.probe}, {unit.model}, {shard})"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    from sweep.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
