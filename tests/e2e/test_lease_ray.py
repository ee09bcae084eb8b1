"""One driver per run, on a real local Ray: a second driver is refused (exit 2, the holder named);
after the first driver is SIGKILLed a new one takes the lease over and resumes without duplicates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sweep.run.lease import LEASE_FILE
from tests.support.sweeps import (
    SLOW_MATCH,
    PYTHON,
    REPO,
    assert_no_duplicates,
    kill_ray_processes,
    make_shards,
    ray_env,
    read_table,
    units_mtimes,
    write_spec,
)

pytestmark = pytest.mark.slow

# Held at its first forward until the test opens the gate, then 0.15 s per forward (units take seconds).
GATED = "tests.support.encoders:gated_linear_encoder"


def _driver(spec: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "sweep.cli", "run", str(spec), "--actors", "2", "--no-progress", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_second_driver_refused_then_takeover_after_sigkill(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = {**ray_env(), "VITSWEEP_TEST_SLEEP_S": "0.15", "VITSWEEP_TEST_GATE": str(gate)}
    make_shards(tmp_path / "shards", 6, 3)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": GATED, "weights": "factory"}], probes=SLOW_MATCH, batch_size=3)
    first = _driver(spec, env)
    try:
        deadline = time.monotonic() + 180
        while not Path(f"{gate}.started").exists():  # the first driver holds the lease, a unit is running
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no unit started in time"
            time.sleep(0.2)
        lease = json.loads((run / LEASE_FILE).read_text())
        assert lease["pid"] == first.pid

        # a second driver, with --force too: refused with one line naming the holder, exit 2
        for extra in ((), ("--force",)):
            second = _driver(spec, env, *extra)
            out, err = second.communicate(timeout=120)
            assert second.returncode == 2, (out, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and lease["run_id"] in lines[0], err
        assert first.poll() is None  # the first driver was not disturbed

        gate.touch()
        while not units_mtimes(run):  # let it finish a unit, then kill it mid-sweep
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline + 180, "no unit finished in time"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        kill_ray_processes(env["RAY_TMPDIR"])
        before = units_mtimes(run)
        assert 1 <= len(before) < 6
        assert json.loads((run / LEASE_FILE).read_text())["pid"] == first.pid  # left behind by the kill

        third = _driver(spec, env)
        out, err = third.communicate(timeout=300)
        assert third.returncode == 0, (out, err)
        assert "took over the lease of a dead driver" in err and f"pid {first.pid}" in err
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["lease_takeover"]["pid"] == first.pid and manifest["state"] == "finished"
        after = units_mtimes(run)
        assert len(after) == 6 and {k: after[k] for k in before} == before  # finished units not redone
        assert read_table(run, "match").num_rows == 18
        assert_no_duplicates(run)
        assert not (run / LEASE_FILE).exists()  # released at the end
        assert not list(run.rglob("*.tmp"))
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        kill_ray_processes(env["RAY_TMPDIR"])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


@pytest.mark.timeout(1200)
def test_driver_that_loses_its_lease_stops_without_touching_the_run(tmp_path: Path, busy_cores: int) -> None:
    """Someone else's lease replaces ours mid-sweep (as a takeover by a driver that judged us dead
    would): the driver notices at its next heartbeat, stops (exit 130) and leaves the new
    holder's lease and the run's manifest and progress alone. Both cores busy (busy_cores): it
    used to notice the loss there but not exit."""
    env = ray_env()
    make_shards(tmp_path / "shards", 2, 3)
    run = tmp_path / "run"
    gate = tmp_path / "gate"
    env.update(VITSWEEP_TEST_GATE=str(gate), VITSWEEP_LEASE_TIMEOUT_S="2")  # heartbeat every 0.5 s
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": GATED, "weights": "factory"}], probes=SLOW_MATCH, batch_size=3)
    driver = _driver(spec, env)
    try:
        deadline = time.monotonic() + 600  # Ray's start under load
        while not Path(f"{gate}.started").exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no unit started in time"
            time.sleep(0.2)
        ours = json.loads((run / LEASE_FILE).read_text())
        thief = {**ours, "host": "thief.example", "pid": 4242, "token": "thief", "took_over": None}
        (run / LEASE_FILE).write_text(json.dumps(thief))
        manifest, progress = (run / "manifest.json").read_text(), (run / "progress.json").read_text()
        out, err = driver.communicate(timeout=180)
        assert driver.returncode == 130, (out, err)
        assert "thief.example pid 4242" in err and "stopping this driver" in err
        assert json.loads((run / LEASE_FILE).read_text())["token"] == "thief"
        assert (run / "manifest.json").read_text() == manifest and (run / "progress.json").read_text() == progress
        assert not list((run / "results").rglob("*.parquet")) if (run / "results").exists() else True
    finally:
        gate.touch()
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        kill_ray_processes(env["RAY_TMPDIR"])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
