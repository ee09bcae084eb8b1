"""The run lifecycle: one sweep spec from its checks to a finished run directory, as stages.

    outcome = run_sweep(load_spec("specs/demo.yaml"), actors=2)
    print(outcome.describe())

`run_sweep` reads top-down:

1. find the work: the output (a new or empty folder, or a run of this spec), the units already
   done (the `units` table), --yes for a big sweep, the shard set of the units to run;
   nothing is written and Ray is not started yet;
2. print the cost estimate's one-line summary (`vitsweep plan`);
3. start or join Ray and place the actors, only when there is work (SIGTERM, as `timeout` and
   `ray job stop` send, becomes Ctrl-C's KeyboardInterrupt);
4. take the run directory's lease (sweep/run/lease.py: one driver at a time; a dead driver's
   lease is taken over); only now spec.yaml and manifest.json are written, so a refused run or
   a failed connection leaves no run folder behind;
5. open the progress (bar or lines, progress.json);
6. sweep the units on Ray (sweep/run/distribute.py), then shut Ray down;
7. the labels pass (sweep/finished/labels.py) over every finished unit, in this process;
8. always, whatever happened: progress.json and manifest.json say how this invocation ended
   (finished, interrupted, failed), Ray is shut down and the lease released.

A rerun into the same directory skips finished units and retries failed ones. `vitsweep run`,
`vitsweep demo` and benchmarks/bench_orchestration.py all run a sweep through `run_sweep`.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow.fs as pafs

from sweep.errors import UserError
from sweep.run.lease import LEASE_FILE, Lease, LeaseHeld, check_free
from sweep.run.manifest import MANIFEST_FILE, check_output, finish_run, prepare_run
from sweep.run.progress import Progress
from sweep.run.spec import LoadedSpec, WorkUnit
from sweep.run.store import RunStore

CONFIRM_UNITS = 1000  # a sweep with more units to run than this needs yes=True (--yes)


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


@dataclass
class Work:
    """The units of a spec split into those to run and those an earlier invocation finished."""

    todo: list[WorkUnit]
    done: list[WorkUnit]
    pairs_ok_done: int = 0  # ok pairs of the done units
    pairs_error_done: int = 0


@dataclass
class Placement:
    """Where the units run: the cluster found, the actors asked for and their device."""

    cluster: Any  # distribute.ClusterInfo
    use_gpu: bool
    n_actors: int

    def describe(self) -> dict[str, Any]:
        """The manifest's `cluster` entry."""
        c = self.cluster
        return {"address": c.address, "nodes": c.nodes, "cpus": c.cpus, "gpus": c.gpus,
                "actors": self.n_actors, "actor_device": "gpu" if self.use_gpu else "cpu"}


def run_sweep(
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
    """Run every unfinished unit of `loaded` into its output directory (stages: module docstring).
    `allow_in_output`: names the output folder may hold without being a run yet (the demo's shards/)."""
    store = output_store(loaded, actors)
    work = find_work(store, loaded, force=force, allow=allow_in_output, yes=yes)
    estimate = announce_estimate(loaded)
    run = _Invocation(store, loaded, work)
    try:
        run.sigterm_interrupts()
        if work.todo:
            run.start_ray(address, actors=actors, device=device)
        run.take_lease()
        run.open_manifest(force=force)
        store.clean_tmp()
        record_estimate(estimate, store)
        run.open_progress(show_progress)
        if work.todo:
            run.run_units()
        if work.todo or not store.exists("labels.json"):
            run.labels = label_pass(store)
        run.state = "finished"
    except KeyboardInterrupt:
        run.state = "interrupted"
        raise
    finally:
        run.close()
    return run.outcome()


# ---- 1. the work -----------------------------------------------------------------------------
def output_store(loaded: LoadedSpec, actors: int | None) -> RunStore:
    if not loaded.spec.output:
        raise UserError(f"{loaded.source}: no output directory: set `output` in the spec or pass --out")
    if actors is not None and actors < 1:
        raise UserError(f"--actors must be at least 1, got {actors}")
    return RunStore(loaded.spec.output)


def find_work(store: RunStore, loaded: LoadedSpec, *, force: bool, allow: tuple[str, ...], yes: bool) -> Work:
    """Check the output and the shard set (nothing written) and split the units into to-do and done."""
    # a lease.json alone is a driver that died before writing its manifest: taken over later
    check_output(store, loaded, force=force, allow=(*allow, LEASE_FILE))
    status, ok_pairs, error_pairs = unit_counts(store)
    todo = [u for u in loaded.units if status.get(u.unit_id) != "ok"]
    if len(todo) > CONFIRM_UNITS and not yes:
        raise UserError(
            f"{len(todo)} units to run ({len(loaded.units)} in the spec); check the grid, then rerun with --yes"
        )
    if todo:
        check_shard_set(sorted({u.shard for u in todo}))
    done = [u for u in loaded.units if status.get(u.unit_id) == "ok"]
    return Work(todo, done, sum(ok_pairs.get(u.unit_id, 0) for u in done),
                sum(error_pairs.get(u.unit_id, 0) for u in done))


def unit_counts(store: RunStore) -> tuple[dict[str, str], dict[str, int], dict[str, int]]:
    """(status, ok pairs, error pairs) per unit id from the `units` table. An unreadable units
    file (a disk error, a hand-edited file) is reported, moved aside as `<name>.corrupt` (readers
    glob `*.parquet`) and its unit run again."""

    def move_aside(path: str, err: Exception) -> None:
        reason = " ".join(str(err).split())[:200]
        print(f"warning: {path}: unreadable units file ({reason}); moved to {path}.corrupt, "
              "its unit will be run again", file=sys.stderr)
        if store.fs.get_file_info(path).type == pafs.FileType.File:
            store.fs.move(path, path + ".corrupt")

    rows = store.read("units", columns=["unit_id", "status", "n_pairs", "n_error"], on_bad_file=move_aside).to_pylist()
    status = {r["unit_id"]: r["status"] for r in rows}
    ok_pairs = {r["unit_id"]: int(r["n_pairs"] or 0) - int(r["n_error"] or 0) for r in rows}
    error_pairs = {r["unit_id"]: int(r["n_error"] or 0) for r in rows}
    return status, ok_pairs, error_pairs


def check_shard_set(shards: list[str]) -> None:
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


def refuse_if_held(spec_path: str, out: str | None) -> None:
    """Stop a second driver in seconds, before the probes (and torch) are imported. Problems with
    the spec itself are left to load_spec, which reports them properly."""
    import yaml

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


# ---- 2. the cost estimate (`vitsweep plan`) --------------------------------------------------
def announce_estimate(loaded: LoadedSpec) -> Any:
    """Print the cost estimate's one-line summary; None when it cannot be made (an estimate never
    stops a run)."""
    from sweep.planning.plan import make_plan

    try:
        estimate = make_plan(loaded)
    except Exception:
        return None
    print(estimate.summary(with_wall=False), flush=True)
    return estimate


def record_estimate(estimate: Any, store: RunStore) -> None:
    """plan.json: what the dashboard's Runs page shows beside the progress."""
    from sweep.planning.plan import PLAN_FILE

    if estimate is None:
        return
    try:
        store.write_json(PLAN_FILE, estimate.to_json())
    except OSError:
        pass


# ---- 3-8. one invocation's resources ---------------------------------------------------------
class _Invocation:
    """What this invocation holds (SIGTERM handler, Ray, lease, manifest, progress) and how it ends;
    `close` gives everything back in the right order, whatever stage was reached."""

    def __init__(self, store: RunStore, loaded: LoadedSpec, work: Work) -> None:
        self.store, self.loaded, self.work = store, loaded, work
        self.state = "failed"  # until a stage says otherwise
        self.labels = ""
        self.main_thread = threading.current_thread() is threading.main_thread()
        self.previous_sigterm = signal.getsignal(signal.SIGTERM) if self.main_thread else None
        self.distribute: Any = None  # the module, while Ray is up
        self.placement: Placement | None = None
        self.cluster: dict[str, Any] | None = None  # the manifest's record, once the actors start
        self.devices: list[str] | None = None  # the actors' devices, once they have stopped
        self.lease: Lease | None = None
        self.manifest: dict[str, Any] | None = None
        self.progress: Progress | None = None

    def sigterm_interrupts(self) -> None:
        """SIGTERM (`timeout`, `ray job stop`) ends the run as Ctrl-C does."""
        if self.main_thread:
            signal.signal(signal.SIGTERM, _raise_interrupt)

    def start_ray(self, address: str | None, *, actors: int | None, device: str) -> None:
        from sweep.run import distribute  # Ray is imported only when there is work to do

        self.distribute = distribute
        cluster = distribute.connect(address, num_cpus=actors or os.cpu_count() or 1)
        self.sigterm_interrupts()  # ray.init installs its own SIGTERM handler (abort, exit 134): ours again
        self.placement = place_actors(cluster, len(self.work.todo), actors=actors, device=device)
        if self.loaded.spec.compile and not self.placement.use_gpu:
            print("note: compile: true is ignored on CPU actors (torch.compile pays off on GPUs only)",
                  file=sys.stderr)
            self.work.todo = [replace(u, compile=False) for u in self.work.todo]

    def take_lease(self) -> None:
        """The run directory's lease (LeaseHeld, exit 2, names a live holder); a dead holder's lease
        is taken over and said so on stderr. Losing the lease later stops this driver."""
        self.lease = lease = Lease.acquire(self.store)  # the run id is added once the manifest has it
        if lease.took_over:
            dead = lease.took_over
            print(
                f"vitsweep run: took over the lease of a dead driver ({dead.get('host')} pid {dead.get('pid')}, "
                f"last heartbeat {dead.get('age_s')} s ago)",
                file=sys.stderr,
            )
        main_thread = self.main_thread

        def lost(message: str) -> None:
            print(f"vitsweep run: {message}; stopping this driver", file=sys.stderr)
            if main_thread:  # Ctrl-C's path: finished units stay, the manifest says "interrupted"
                _thread.interrupt_main()

        lease.start_heartbeat(on_lost=lost)

    def open_manifest(self, *, force: bool) -> None:
        assert self.lease is not None
        self.manifest = manifest = prepare_run(self.store, self.loaded, force=force)
        self.lease.set_run_id(manifest["run_id"])
        if self.lease.took_over:
            manifest["lease_takeover"] = self.lease.took_over
            self.store.write_json(MANIFEST_FILE, manifest)

    def open_progress(self, show: bool | None) -> None:
        assert self.manifest is not None
        work = self.work
        self.progress = Progress(
            self.store, self.manifest["run_id"], units_total=len(self.loaded.units), units_skipped=len(work.done),
            pairs_skipped=work.pairs_ok_done, pairs_error_skipped=work.pairs_error_done, show=show,
        )

    def run_units(self) -> None:
        """Every unit to do on the Ray actors; then Ray shuts down (the labels pass runs without it)."""
        assert self.placement is not None and self.manifest is not None and self.progress is not None
        self.cluster = self.placement.describe()
        sweep = build_sweep(self.work.todo, self.store, self.manifest["run_id"], self.progress, self.placement,
                            max_attempts=self.loaded.spec.max_attempts)
        try:
            sweep.start()
            sweep.run()
        finally:
            self.devices = sorted({f"{i.get('host')}: {i.get('device')}" for i in sweep.actor_infos()})
            sweep.stop()
        self.distribute.shutdown()
        self.distribute = None

    def close(self) -> None:
        """Restore SIGTERM, close the progress, record how the invocation ended in the manifest,
        shut Ray down and release the lease. A driver that lost its lease writes nothing: the
        run's files are the new holder's now."""
        if self.main_thread:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
        lost = self.lease is not None and self.lease.lost
        progress = self.progress
        if progress is not None:
            if lost:
                progress.bar.close()
            else:
                progress.finish(self.state)
        if self.manifest is not None and not lost:
            totals = {} if progress is None else {
                "units_total": progress.units_total, "units_done": progress.units_done,
                "units_failed": progress.units_failed, "pairs_done": progress.pairs_done,
                "pairs_error": progress.pairs_error,
            }
            ran = {} if progress is None else {
                "units_run": progress.units_done - progress.units_skipped, "units_failed": progress.units_failed,
                "pairs": progress.pairs_now,
            }
            finish_run(self.store, self.manifest, self.state, devices=self.devices, cluster=self.cluster,
                       totals=totals, this_invocation=ran)
        if self.distribute is not None:
            self.distribute.shutdown()
        if self.lease is not None:
            self.lease.release()

    def outcome(self) -> Outcome:
        progress, manifest = self.progress, self.manifest
        assert progress is not None and manifest is not None
        return Outcome(
            run_dir=self.store.root, run_id=manifest["run_id"], units_total=len(self.loaded.units),
            units_skipped=progress.units_skipped, units_done=progress.units_done,
            units_failed=progress.units_failed, pairs_done=progress.pairs_done, pairs_error=progress.pairs_error,
            seconds=progress.elapsed_s, failures=list(progress.failures), labels=self.labels,
        )


def place_actors(cluster: Any, n_units: int, *, actors: int | None, device: str) -> Placement:
    use_gpu = device == "gpu" or (device == "auto" and cluster.gpus >= 1)
    if device == "cpu" and cluster.cpus < 1:
        raise UserError("--device cpu, but the cluster has no CPU slots")
    n_actors = actors or max(1, int(cluster.gpus if use_gpu else cluster.cpus))
    return Placement(cluster, use_gpu, min(n_actors, n_units))


# ---- 6. the sweep ----------------------------------------------------------------------------
def build_sweep(
    todo: list[WorkUnit], store: RunStore, run_id: str, progress: Progress, placement: Placement, *, max_attempts: int
) -> Any:
    """The Ray sweep (distribute.Sweep) of `todo` on the placed actors, reporting to `progress`;
    a unit that fails for good gets an error `units` row and no partial rows."""
    from sweep.run import distribute
    from sweep.run.worker import UnitSummary, units_row

    by_id = {u.unit_id: u for u in todo}

    def on_done(summary: UnitSummary) -> None:
        unit = by_id.get(summary.unit_id)
        progress.unit_done(summary.n_pairs, summary.n_error, _label(unit) if unit else summary.unit_id)

    def on_failed(unit: WorkUnit, error: str, attempts: int) -> None:
        store.remove_unit(unit.probe, unit.model, unit.unit_id)  # no partial rows of a failed unit
        summary = UnitSummary(unit.unit_id, "error", error=error, attempts=attempts)
        row = units_row(unit, run_id, summary, None, datetime.now(timezone.utc))
        store.write_unit(unit.probe, unit.model, unit.unit_id, {}, lambda: row)
        progress.unit_failed(unit.unit_id, error, _label(unit))

    return distribute.Sweep(
        todo, run_root=store.root, run_id=run_id, actors=placement.n_actors, use_gpu=placement.use_gpu,
        max_attempts=max_attempts, on_done=on_done, on_failed=on_failed,
        on_retry=lambda unit, error, attempt: progress.unit_retry(unit.unit_id, error),
    )


# ---- 7. the labels pass ----------------------------------------------------------------------
def label_pass(store: RunStore) -> str:
    """The labels pass over every finished unit (in this process, after Ray has shut down)."""
    from sweep.finished.labels import label_run

    if not store.unit_status():
        return ""
    try:
        return label_run(store).describe().replace("\n", "\n  ")
    except UserError as err:  # e.g. no unit finished: the units' own outcome still stands
        return f"not computed ({err}); run `vitsweep labels {store.root}` to retry"


def _label(unit: WorkUnit) -> str:
    shard = unit.shard.rstrip("/").rsplit("/", 1)[-1]
    return f"{unit.unit_id} ({unit.probe}, {unit.model}, {shard})"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
