"""The driver's failure paths on a real local Ray: a UserError is never retried, other errors
are retried up to max_attempts, actors that die for good are replaced only so many times, and a
sweep whose actors never start gives up after the start-up timeout."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import ray

from sweep.errors import RunFailed
from sweep.run.distribute import ACTOR_MAX_RESTARTS, Sweep
from sweep.run.spec import WorkUnit, load_spec
from tests.support.sweeps import make_shards, write_spec

pytestmark = pytest.mark.slow

MATCH_ONLY = [{"name": "match", "params": {"max_steps": 5, "log_every": 5}}]


@pytest.fixture(scope="module")
def good_unit(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkUnit, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    make_shards(tmp / "shards", 1, 2)
    (unit,) = load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", probes=MATCH_ONLY)).units
    return unit, tmp / "run"


class _Calls:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.retried: list[tuple[str, int, str]] = []
        self.failed: list[tuple[str, int, str]] = []

    def hooks(self) -> dict[str, Any]:
        return {
            "on_done": lambda s: self.done.append(s.unit_id),
            "on_retry": lambda u, e, a: self.retried.append((u.unit_id, a, e)),
            "on_failed": lambda u, e, a: self.failed.append((u.unit_id, a, e)),
        }


def test_user_error_is_never_retried_other_errors_are(connected_ray: dict[str, str], good_unit: tuple[WorkUnit, Path]) -> None:
    unit, run_dir = good_unit
    bad_name = dataclasses.replace(unit, unit_id="bad-name", model="tests.support.encoders:no_such_factory")
    broken = dataclasses.replace(unit, unit_id="broken", model="tests.support.encoders:broken_factory")
    calls = _Calls()
    sweep = Sweep([bad_name, broken, unit], run_root=str(run_dir), run_id="r", actors=1, use_gpu=False,
                  max_attempts=3, poll_s=0.1, **calls.hooks())
    try:
        sweep.run()
    finally:
        sweep.stop()
    assert calls.done == [unit.unit_id]
    # the UserError: failed on its first attempt, never retried, the message kept
    assert [(u, a) for u, a, _ in calls.failed] == [("bad-name", 1), ("broken", 3)]
    assert calls.failed[0][2].startswith("UserError: cannot import encoder factory")
    # any other exception: retried until max_attempts
    assert [(u, a) for u, a, _ in calls.retried] == [("broken", 1), ("broken", 2)]
    assert all("broken encoder factory (test)" in e for _, _, e in calls.retried + calls.failed[1:])


@ray.remote(max_restarts=0)
class _Doomed:
    """An actor whose creation always fails: every ping raises RayActorError."""

    def __init__(self) -> None:
        raise RuntimeError("this actor never starts (test)")

    def ping(self) -> dict[str, Any]:
        return {}


def test_actors_that_keep_dying_are_replaced_only_so_often(connected_ray: dict[str, str], good_unit: tuple[WorkUnit, Path]) -> None:
    unit, run_dir = good_unit
    created: list[Any] = []

    class DoomedSweep(Sweep):
        def _new_actor(self) -> Any:
            created.append(_Doomed.remote())
            return created[-1]

    calls = _Calls()
    sweep = DoomedSweep([unit], run_root=str(run_dir), run_id="r", actors=1, use_gpu=False, poll_s=0.1,
                        startup_timeout_s=600, **calls.hooks())
    with pytest.raises(RunFailed, match="actors keep dying; giving up"):
        sweep.run()
    # the first actor plus ACTOR_MAX_RESTARTS replacements per slot; the next death ends the sweep
    assert sweep.replacements == ACTOR_MAX_RESTARTS + 1
    assert len(created) == ACTOR_MAX_RESTARTS + 1
    assert calls.done == calls.retried == calls.failed == []
    sweep.stop()


@pytest.mark.timeout(240)  # a sweep that never gives up fails here instead of hanging
def test_a_sweep_whose_actors_never_start_times_out(connected_ray: dict[str, str], good_unit: tuple[WorkUnit, Path]) -> None:
    """Asking for a GPU on a cluster without one: the actors stay pending, the sweep gives up
    after startup_timeout_s with a message naming the resources."""
    unit, run_dir = good_unit
    calls = _Calls()
    sweep = Sweep([unit], run_root=str(run_dir), run_id="r", actors=1, use_gpu=True, poll_s=0.1,
                  startup_timeout_s=1.5, **calls.hooks())
    try:
        with pytest.raises(RunFailed, match=r"no actor has been available for 2 s \(resources asked per actor: 1 GPU"):
            sweep.run()
    finally:
        sweep.stop()
    assert calls.done == calls.retried == calls.failed == [] and sweep.replacements == 0
    assert not any(slot.alive for slot in sweep.slots)
