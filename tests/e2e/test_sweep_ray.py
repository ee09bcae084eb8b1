"""Sweeps on a real local Ray: expected rows, failed units, a killed actor, a killed driver,
Ctrl-C, resume without duplicates."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sweep.run.driver import run_sweep
from sweep.run.spec import load_spec
from tests.support.sweeps import (
    SLOW_MATCH,
    LINEAR,
    PYTHON,
    REPO,
    ROWS_PER_PAIR,
    SLOW,
    assert_no_duplicates,
    kill_ray_processes,
    make_shards,
    ray_env,
    read_table,
    units_mtimes,
    write_spec,
)

pytestmark = pytest.mark.slow


def test_sweep_rows_failed_unit_and_resume(tmp_path: Path, local_ray: dict[str, str]) -> None:
    make_shards(tmp_path / "shards", 2, 4, corrupt={1})  # pair 1 (shard 0) does not decode
    models = [{"name": LINEAR, "weights": "factory"}, {"name": "tests.support.encoders:broken_factory", "weights": "factory"}]
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run", models=models, max_attempts=2)
    outcome = run_sweep(load_spec(spec), actors=2, show_progress=False)
    run = tmp_path / "run"

    assert (outcome.units_total, outcome.units_done, outcome.units_failed) == (12, 6, 6)
    ok_pairs = 8 - 1
    for probe in ("match", "perturb", "lipschitz"):
        rows = read_table(run, probe).to_pylist()
        assert len(rows) == ok_pairs * ROWS_PER_PAIR[probe] + 1
        assert {r["model"] for r in rows} == {LINEAR}
        assert sum(r["status"] == "error" for r in rows) == 1
    assert read_table(run, "pairs").num_rows == 3 * 8
    assert read_table(run, "images").num_rows == 2 * (3 + 4)  # match and perturb, gallery 4
    units = read_table(run, "units").to_pylist()
    failed = [u for u in units if u["status"] == "error"]
    assert len(units) == 12 and len(failed) == 6
    assert all(u["attempts"] == 2 and "broken encoder factory" in u["error"] for u in failed)
    assert_no_duplicates(run)
    # The labels pass ran when the units finished: every ok match and perturb row of the good
    # model is labelled against the whole run's bank (the 14 clean images of its 7 good pairs).
    labels = read_table(run, "labels").to_pylist()
    assert len(labels) == ok_pairs * (ROWS_PER_PAIR["match"] + ROWS_PER_PAIR["perturb"])
    assert {r["model"] for r in labels} == {LINEAR} and all(r["knn_adv"] is not None for r in labels)
    assert {r["knn_bank_size"] for r in labels} == {2 * ok_pairs - 2}
    assert "rows labelled by 5-NN over 14 labelled of 14 images (run)" in outcome.labels

    import json

    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["units_failed"] == 6 and len(progress["failures"]) == 6
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["finished_at"] and manifest["versions"]["ray"] and manifest["devices"]
    assert (run / "spec.yaml").is_file()

    # A rerun of the good part only: everything is already done, nothing is rewritten.
    before = units_mtimes(run)
    good = write_spec(tmp_path / "good.yaml", str(tmp_path / "shards"), run, max_attempts=2)
    again = run_sweep(load_spec(good), actors=2, show_progress=False, force=True)
    assert (again.units_skipped, again.units_done, again.units_failed) == (6, 6, 0)
    assert {k: v for k, v in units_mtimes(run).items() if k in before} == before
    assert_no_duplicates(run)


def test_actor_killed_mid_unit(tmp_path: Path, local_ray: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from sweep.run import distribute

    make_shards(tmp_path / "shards", 4, 4)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run",
                      models=[{"name": SLOW, "weights": "factory"}], probes=SLOW_MATCH, batch_size=4)
    sweeps: list[distribute.Sweep] = []
    real_start = distribute.Sweep.start
    monkeypatch.setattr(distribute.Sweep, "start", lambda self: (sweeps.append(self), real_start(self))[1])
    killed: list[str] = []

    def kill_one_busy_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for slot in list(sweeps[0].slots) if sweeps else []:
                if slot.busy and slot.alive:
                    time.sleep(1.0)  # well inside the unit
                    if slot.busy:
                        pid = slot.info["pid"]  # from the actor's own ping (UnitActor.pid() says the same)
                        killed.append(slot.busy[1].unit_id)
                        os.kill(pid, signal.SIGKILL)
                        return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_busy_actor, daemon=True)
    killer.start()
    outcome = run_sweep(load_spec(spec), actors=2, show_progress=False)
    killer.join(timeout=5)

    assert killed, "no actor was killed"
    assert (outcome.units_done, outcome.units_failed) == (4, 0)
    run = tmp_path / "run"
    assert read_table(run, "match").num_rows == 16
    assert read_table(run, "labels").num_rows == 16  # labelled once, after the retried unit too
    assert_no_duplicates(run)
    attempts = {u["unit_id"]: u["attempts"] for u in read_table(run, "units").to_pylist()}
    assert attempts[killed[0]] == 2


def _start_driver(spec: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "sweep.cli", "run", str(spec), "--actors", "2", "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_for_units(run: Path, n: int, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while len(units_mtimes(run)) < n:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "no unit finished in time"
        time.sleep(0.2)


def test_interrupt_then_kill_driver_then_resume(tmp_path: Path) -> None:
    import json

    env = ray_env()
    make_shards(tmp_path / "shards", 6, 3)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": SLOW, "weights": "factory"}], probes=SLOW_MATCH, batch_size=3)
    try:
        # Ctrl-C: a clean stop, state "interrupted", finished units queryable.
        proc = _start_driver(spec, env)
        _wait_for_units(run, 1, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
        assert json.loads((run / "progress.json").read_text())["state"] == "interrupted"
        assert json.loads((run / "manifest.json").read_text())["state"] == "interrupted"
        first = units_mtimes(run)
        assert 1 <= len(first) < 6 and read_table(run, "match").num_rows >= 3

        # SIGKILL of the driver mid-sweep: no clean-up at all.
        proc = _start_driver(spec, env)
        _wait_for_units(run, len(first) + 1, proc)
        proc.kill()
        proc.wait(timeout=30)
        kill_ray_processes(env["RAY_TMPDIR"])
        second = units_mtimes(run)
        assert {k: second[k] for k in first} == first  # finished units were not redone

        proc = _start_driver(spec, env)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        final = units_mtimes(run)
        assert len(final) == 6 and {k: final[k] for k in second} == second
        progress = json.loads((run / "progress.json").read_text())
        assert progress["state"] == "finished" and progress["units_skipped"] == len(second)
        assert read_table(run, "match").num_rows == 18
        assert_no_duplicates(run)
        assert not list(run.rglob("*.tmp"))
    finally:
        kill_ray_processes(env["RAY_TMPDIR"])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
