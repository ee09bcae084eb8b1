"""Ray orchestration (the only module that imports Ray): one actor per GPU, a pull loop, retries.

Each `UnitActor` owns one GPU (`num_gpus=1`; one CPU slot on a CPU-only cluster), keeps its
encoders loaded across units, and runs `sweep.run.worker.run_unit` for whatever unit the driver hands
it. The driver keeps exactly one unit in flight per live actor, so a unit's attempt count is
exact; it never sees rows, only `UnitSummary`s (the actors write the Parquet files themselves).

Failures:
- an exception inside a unit: the unit is tried again (up to `max_attempts`), then recorded as
  failed (a `units` row with status "error") and the sweep goes on; a `UserError` (a bad model
  name, say) is not retried;
- an actor process that dies (SIGKILL, OOM, its node lost): Ray restarts it (`max_restarts`);
  its unit goes back to the queue; the driver gives the actor no work until it answers a ping
  again (a restart can wait for a free GPU forever when its node is gone, so the sweep never
  waits on it while other actors are alive); an actor out of restarts is replaced.

Fencing: an actor only stages a unit attempt's files; the driver commits them when the result of
the attempt it holds as current comes back. An attempt given up on (its actor declared dead) can
finish late, but its files are never committed (see sweep/run/store.py). Error messages are folded by sweep.errors.one_line.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from sweep.errors import RunFailed, UserError, one_line
from sweep.run.spec import WorkUnit
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, UnitSummary, run_unit

log = logging.getLogger(__name__)

ACTOR_MAX_RESTARTS = 4


@dataclass
class ClusterInfo:
    """What the driver found when it connected."""

    address: str
    started_local: bool
    cpus: float
    gpus: float
    nodes: int


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> ClusterInfo:
    """Join the cluster at `address` (or $RAY_ADDRESS, as inside `ray job submit`), else start a
    local one. A local start sizes Ray to `num_cpus` CPU slots and the machine's GPUs."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True, "ignore_reinit_error": True}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as err:
            reason = " ".join(str(err).split())[:300]
            raise UserError(f"cannot connect to the Ray cluster at {address}: {reason}") from None
    else:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,  # only small summaries travel through it
            **common,
        )
    resources = ray.cluster_resources()
    return ClusterInfo(
        address=address or "local",
        started_local=not address,
        cpus=float(resources.get("CPU", 0)),
        gpus=float(resources.get("GPU", 0)),
        nodes=len([n for n in ray.nodes() if n.get("Alive")]),
    )


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, with one line, when nothing listens at a HOST:PORT address (Ray itself
    retries for minutes). "auto" and ray:// client addresses are left to Ray."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise UserError(f"bad Ray address {address!r}: use HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {err.strerror or err}") from None


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


@ray.remote
class UnitActor:
    """Runs units on one device, keeping encoders loaded between them."""

    def __init__(self, run_root: str, run_id: str, device: str) -> None:
        # torch's own deprecation note, raised inside a dependency's import, is noise in the run's output
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        self.run_root = run_root
        self.run_id = run_id
        self.device = _choose_device(device)
        self.cache = EncoderCache(self.device)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, unit: WorkUnit, attempt: int) -> UnitSummary:
        read_workers = 2 if self.device == "cuda" else 0  # a CPU actor owns one core: decode in-process
        return run_unit(
            unit, self.cache, self.run_root, run_id=self.run_id, attempt=attempt, worker=self.worker,
            read_workers=read_workers, commit=False,  # the driver commits the current attempt only
        )

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": self.cache.describe(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "node_id": ray.get_runtime_context().get_node_id()}

    def pid(self) -> int:
        return os.getpid()


def _choose_device(preference: str) -> str:
    """The GPU Ray assigned when torch can use it; the CPU otherwise (also when Ray assigned a GPU
    that torch cannot see, as on a test cluster that declares GPUs it does not have)."""
    import torch

    if preference != "cpu" and ray.get_gpu_ids() and torch.cuda.is_available():
        return "cuda"
    if preference == "gpu" and ray.get_gpu_ids():
        log.warning("Ray assigned GPU %s but torch sees no CUDA device: running on the CPU", ray.get_gpu_ids())
    return "cpu"


@dataclass
class _Slot:
    index: int
    handle: Any
    alive: bool = False  # answered a ping since it last died
    ping: Any = None  # ObjectRef of an outstanding ping
    busy: tuple[Any, WorkUnit, int] | None = None  # (ObjectRef, unit, attempt)
    info: dict[str, Any] = field(default_factory=dict)


class Sweep:
    """The driver's pull loop over a list of units."""

    def __init__(
        self,
        units: Sequence[WorkUnit],
        *,
        run_root: str,
        run_id: str,
        actors: int,
        use_gpu: bool,
        max_attempts: int = 3,
        on_done: Callable[[UnitSummary], None] = lambda s: None,
        on_failed: Callable[[WorkUnit, str, int], None] = lambda u, e, a: None,
        on_retry: Callable[[WorkUnit, str, int], None] = lambda u, e, a: None,
        startup_timeout_s: float = 1800.0,
        poll_s: float = 0.5,
    ) -> None:
        self.queue: deque[tuple[WorkUnit, int]] = deque((u, 1) for u in units)
        self.run_root = run_root
        self.run_id = run_id
        self.n_actors = max(1, actors)
        self.use_gpu = use_gpu
        self.max_attempts = max_attempts
        self.on_done, self.on_failed, self.on_retry = on_done, on_failed, on_retry
        self.startup_timeout_s = startup_timeout_s
        self.poll_s = poll_s
        self.slots: list[_Slot] = []
        self.replacements = 0
        self.current: dict[str, int] = {}  # unit_id -> the attempt whose files may be committed
        self._store: RunStore | None = None

    # ---- actors ------------------------------------------------------------------------------
    def _new_actor(self) -> Any:
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": ACTOR_MAX_RESTARTS, "max_task_retries": 0}
        if self.use_gpu:
            options["num_gpus"] = 1
        return UnitActor.options(**options).remote(self.run_root, self.run_id, "gpu" if self.use_gpu else "cpu")

    def start(self) -> None:
        for i in range(self.n_actors):
            slot = _Slot(i, self._new_actor())
            slot.ping = slot.handle.ping.remote()
            self.slots.append(slot)

    def actor_infos(self) -> list[dict[str, Any]]:
        return [s.info for s in self.slots if s.info]

    def stop(self) -> None:
        for slot in self.slots:
            ray.kill(slot.handle, no_restart=True)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        if not self.slots:
            self.start()
        last_alive = time.monotonic()
        while self.queue or any(s.busy for s in self.slots):
            self._dispatch()
            waiting = {s.busy[0]: s for s in self.slots if s.busy} | {s.ping: s for s in self.slots if s.ping}
            ready = ray.wait(list(waiting), num_returns=1, timeout=self.poll_s)[0] if waiting else []
            for ref in ready:
                slot = waiting[ref]
                if slot.ping is not None and ref == slot.ping:
                    self._on_ping(slot, ref)
                else:
                    self._on_result(slot, ref)
            if any(s.alive for s in self.slots):
                last_alive = time.monotonic()
            elif time.monotonic() - last_alive > self.startup_timeout_s:
                raise RunFailed(
                    f"no actor has been available for {self.startup_timeout_s:.0f} s "
                    f"(resources asked per actor: {'1 GPU' if self.use_gpu else '1 CPU'}; "
                    f"cluster has {ray.cluster_resources()})"
                )

    def _dispatch(self) -> None:
        for slot in self.slots:
            if slot.alive and slot.busy is None and self.queue:
                unit, attempt = self.queue.popleft()
                self.current[unit.unit_id] = attempt
                slot.busy = (slot.handle.run.remote(unit, attempt), unit, attempt)

    def _on_ping(self, slot: _Slot, ref: Any) -> None:
        slot.ping = None
        try:
            slot.info = ray.get(ref)
            slot.alive = True
        except RayActorError:
            # Out of restarts (or its creation failed): replace it, within reason.
            self.replacements += 1
            if self.replacements > ACTOR_MAX_RESTARTS * self.n_actors:
                raise RunFailed("actors keep dying; giving up (see the Ray logs)") from None
            log.warning("actor %d is gone for good; starting a new one", slot.index)
            slot.handle = self._new_actor()
            slot.ping = slot.handle.ping.remote()

    def _on_result(self, slot: _Slot, ref: Any) -> None:
        assert slot.busy is not None
        _, unit, attempt = slot.busy
        slot.busy = None
        try:
            summary = ray.get(ref)
        except RayTaskError as err:
            cause = err.cause
            message = one_line(cause if cause is not None else err, with_type=True, limit=500)
            self._retry_or_fail(unit, attempt, message, retry=not isinstance(cause, UserError))
            return
        except (ActorDiedError, ActorUnavailableError, RayActorError) as err:
            slot.alive = False
            slot.ping = slot.handle.ping.remote()  # answers once Ray has restarted it
            self._retry_or_fail(unit, attempt, f"actor died: {one_line(err, with_type=True, limit=500)}", retry=True)
            return
        self._commit(unit, attempt, summary)

    def _commit(self, unit: WorkUnit, attempt: int, summary: UnitSummary) -> None:
        """Fencing: only the current attempt's staged files go into place (see sweep/run/store.py)."""
        if self._store is None:
            self._store = RunStore(self.run_root)
        if self.current.get(unit.unit_id) != attempt or summary.attempts != attempt:
            log.warning("discarding the files of unit %s attempt %d (no longer current)", unit.unit_id, attempt)
            self._store.discard_staged(summary.staged)
            return
        try:
            self._store.commit_staged(summary.staged)
        except OSError as err:  # e.g. the object store refused a copy: the unit is tried again
            reason = one_line(err, with_type=True, limit=500)
            self._retry_or_fail(unit, attempt, f"could not commit its files: {reason}", retry=True)
            return
        self.current.pop(unit.unit_id, None)
        self.on_done(summary)

    def _retry_or_fail(self, unit: WorkUnit, attempt: int, message: str, *, retry: bool) -> None:
        if retry and attempt < self.max_attempts:
            self.on_retry(unit, message, attempt)
            self.queue.append((unit, attempt + 1))
        else:
            self.on_failed(unit, message, attempt)
