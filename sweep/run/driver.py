"""The run lifecycle: one sweep spec from its checks to a finished run directory, as stages.

    outcome = run_sweep(load_spec("specs/demo.yaml"), actors=2)
    print(outcome.describe())

`run_sweep` reads top-down:

1. find the work (sweep/run/work.py): the output (a new or empty folder, or a run of this spec), the units already
   done (the `units` table), --yes for a big sweep, the shard set of the units to run;
   nothing is written and Ray is not started yet;
2. print the cost estimate's one-line summary (`vitsweep plan`);
3. SIGINT (Ctrl-C) and SIGTERM (`timeout`, `ray job stop`) request a stop: the handler sets a
   flag and raises KeyboardInterrupt; the flag is checked between stages and at every poll of
   the sweep, so a stop is honoured even when the KeyboardInterrupt lands somewhere that
   swallows it (inside Ray's start-up, a busy machine's odd moment). Losing the lease does the
   same;
4. take the run directory's lease (sweep/run/lease.py: one driver at a time; a dead driver's
   lease is taken over), before Ray starts, so a second driver is refused in seconds; then
   start or join Ray and place the actors, only when there is work (the signal handlers are
   installed again after ray.init, which installs its own); only now spec.yaml and
   manifest.json are written, so a refused run or a failed connection leaves no run folder behind;
5. open the progress (bar or lines, progress.json);
6. sweep the units on Ray (sweep/run/distribute.py), then shut Ray down;
7. the labels pass (sweep/finished/labels.py) over every finished unit, in this process, then
   the transfer pass (sweep/finished/transfer.py: each matched image on the run's other models,
   for runs with `transfer: true`);
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


from sweep.errors import UserError
from sweep.run.lease import LEASE_FILE, LEASE_LOCK, Lease, takeover_note
from sweep.run.manifest import MANIFEST_FILE, finish_run, prepare_run
from sweep.run.progress import Progress, warn_if_slow
from sweep.run.spec import LoadedSpec, WorkUnit
from sweep.run.store import RunStore
from sweep.run.work import CONFIRM_UNITS, Work, find_work, output_store, shards_inside  # noqa: F401 (run's API)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    with warn_if_slow(f"the output {store.root} and the shards"):
        work = find_work(store, loaded, force=force, allow=allow_in_output, yes=yes)
    estimate = announce_estimate(loaded)
    run = _Invocation(store, loaded, work)
    try:
        run.handle_signals()
        with warn_if_slow(f"the lease of {store.root}"):
            run.take_lease()  # before Ray: a second driver is refused in seconds, not after Ray's start
        if work.todo:
            run.start_ray(address, actors=actors, device=device)
        run.check_stop()
        with warn_if_slow(f"the manifest of {store.root}"):
            run.open_manifest(force=force)
            store.clean_tmp()
            record_estimate(estimate, store)
        run.open_progress(show_progress)
        if work.todo:
            run.run_units()
        run.check_stop()
        if work.todo or not store.exists("labels.json"):
            run.labels = label_pass(store)
            run.labels += transfer_pass(store, loaded)
        run.check_stop()  # a stop that came while the labels were written: not "finished"
        run.state = "finished"
    except KeyboardInterrupt:
        run.state = "interrupted"
        raise
    finally:
        run.close()
    return run.outcome()


# ---- 1. the work: sweep/run/work.py --------------------------------------------------------

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
        self.stop = threading.Event()  # a stop was requested (a signal, the lease lost)
        self.previous_handlers: dict[int, Any] = {}
        self.new_folder = store.is_local and not Path(store.base).exists()  # removed again if left empty
        self.distribute: Any = None  # the module, while Ray is up
        self.placement: Placement | None = None
        self.cluster: dict[str, Any] | None = None  # the manifest's record, once the actors start
        self.devices: list[str] | None = None  # the actors' devices, once they have stopped
        self.lease: Lease | None = None
        self.manifest: dict[str, Any] | None = None
        self.progress: Progress | None = None

    def handle_signals(self) -> None:
        """SIGINT (Ctrl-C) and SIGTERM (`timeout`, `ray job stop`) request a stop (stage 3)."""
        if not self.main_thread:
            return
        if not self.previous_handlers:
            self.previous_handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        raise KeyboardInterrupt

    def check_stop(self) -> None:
        """KeyboardInterrupt when a stop was requested, even if its first KeyboardInterrupt was lost."""
        if self.stop.is_set():
            raise KeyboardInterrupt

    def start_ray(self, address: str | None, *, actors: int | None, device: str) -> None:
        from sweep.run import distribute  # Ray is imported only when there is work to do

        self.distribute = distribute
        cluster = distribute.connect(address, num_cpus=actors or os.cpu_count() or 1)
        self.handle_signals()  # ray.init installs its own SIGTERM handler (exit 15): ours again
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
            print(f"vitsweep run: {takeover_note(lease.took_over)}", file=sys.stderr)
        main_thread, stop = self.main_thread, self.stop

        def lost(message: str) -> None:
            print(f"vitsweep run: {message}; stopping this driver", file=sys.stderr)
            stop.set()  # seen at the sweep's next poll, whatever the main thread is doing
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
                            max_attempts=self.loaded.spec.max_attempts, should_stop=self.stop.is_set)
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
            for signum, handler in self.previous_handlers.items():
                signal.signal(signum, handler)
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
        if self.manifest is None:
            self._remove_lease_folder()

    def _remove_lease_folder(self) -> None:
        """Stopped before the manifest: no run folder is left behind, only what was there before."""
        if not self.store.is_local:
            return
        folder = Path(self.store.base)
        if not (folder / LEASE_FILE).exists():
            (folder / LEASE_LOCK).unlink(missing_ok=True)
        if self.new_folder:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass

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
    todo: list[WorkUnit], store: RunStore, run_id: str, progress: Progress, placement: Placement, *, max_attempts: int,
    should_stop: Any = lambda: False,
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
        on_retry=lambda unit, error, attempt: progress.unit_retry(unit.unit_id, error), should_stop=should_stop,
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


# ---- 7b. the transfer pass ---------------------------------------------------------------------
def transfer_pass(store: RunStore, loaded: LoadedSpec) -> str:
    """Each matched image (runs with `transfer: true`) on the run's other models."""
    from sweep.finished.transfer import transfer_stage

    return transfer_stage(store, loaded)


def _label(unit: WorkUnit) -> str:
    shard = unit.shard.rstrip("/").rsplit("/", 1)[-1]
    return f"{unit.unit_id} ({unit.probe}, {unit.model}, {shard})"

