"""The run lease on a local directory: refuse a live holder, take over a dead one, never two holders."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sweep.run.lease import LEASE_FILE, Lease, LeaseHeld, LeaseLost
from sweep.run.store import RunStore


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lease(folder: Path, **fields: object) -> None:
    now = datetime.now(timezone.utc).isoformat()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": None, "run_id": "r1",
              "token": "t", "acquired_at": now, "heartbeat_at": now, "heartbeat_s": 1.0, "timeout_s": 30.0, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LEASE_FILE).write_text(json.dumps(holder))


def test_second_acquire_refused_until_release(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    first = Lease.acquire(store, run_id="run-a")
    held = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and held["run_id"] == "run-a"
    with pytest.raises(LeaseHeld) as err:
        Lease.acquire(store)
    assert f"pid {os.getpid()}" in str(err.value) and "run-a" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2
    first.release()
    assert not (tmp_path / "run" / LEASE_FILE).exists()
    second = Lease.acquire(store)
    assert second.took_over is None
    second.release()


def test_dead_pid_on_this_host_is_taken_over(tmp_path: Path) -> None:
    pid = _dead_pid()
    _write_lease(tmp_path / "run", pid=pid, token="old")
    lease = Lease.acquire(RunStore(tmp_path / "run"))
    assert lease.took_over is not None and lease.took_over["pid"] == pid and lease.took_over["token"] == "old"
    on_disk = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
    assert on_disk["pid"] == os.getpid() and on_disk["took_over"]["pid"] == pid
    lease.release()


def test_reused_pid_is_dead(tmp_path: Path) -> None:
    """Our own pid, but recorded with another start time: a new process that reused the pid."""
    _write_lease(tmp_path / "run", pid=os.getpid(), pid_started="1")
    lease = Lease.acquire(RunStore(tmp_path / "run"))
    assert lease.took_over is not None
    lease.release()


def test_other_host_alive_until_heartbeat_is_stale(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    _write_lease(folder, host="elsewhere.example", pid=1, timeout_s=30.0)
    with pytest.raises(LeaseHeld, match="elsewhere.example pid 1"):
        Lease.acquire(RunStore(folder))
    old = time.time() - 31
    os.utime(folder / LEASE_FILE, (old, old))  # 31 s without a heartbeat: past its 30 s timeout
    lease = Lease.acquire(RunStore(folder))
    assert lease.took_over["host"] == "elsewhere.example" and lease.took_over["age_s"] >= 31
    lease.release()


def test_heartbeat_and_loss(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    lease = Lease.acquire(RunStore(folder), heartbeat_s=0.1)
    first = json.loads((folder / LEASE_FILE).read_text())["heartbeat_at"]
    time.sleep(0.01)
    lease.beat()
    assert json.loads((folder / LEASE_FILE).read_text())["heartbeat_at"] > first
    # someone else replaces the file (a takeover): our next beat notices and reports the holder
    _write_lease(folder, host="thief.example", pid=7)
    with pytest.raises(LeaseLost, match="thief.example pid 7"):
        lease.beat()
    lease.release()  # must not delete the thief's lease
    assert json.loads((folder / LEASE_FILE).read_text())["host"] == "thief.example"


def test_heartbeat_thread_reports_loss(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    lease = Lease.acquire(RunStore(folder), heartbeat_s=0.05)
    lost: list[str] = []
    lease.start_heartbeat(on_lost=lost.append)
    (folder / LEASE_FILE).unlink()
    deadline = time.monotonic() + 30
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    lease.release()
    assert lost and "deleted" in lost[0]


def _contend(folder: str, barrier: "multiprocessing.synchronize.Barrier", results: "multiprocessing.Queue") -> None:
    barrier.wait()
    try:
        lease = Lease.acquire(RunStore(folder))
        results.put(("won", os.getpid()))
        time.sleep(1.0)  # hold it while the others try
        lease.release()
    except LeaseHeld:
        results.put(("refused", os.getpid()))


@pytest.mark.parametrize("stale", [False, True])
def test_concurrent_acquire_has_one_winner(tmp_path: Path, stale: bool) -> None:
    """Six processes start acquiring at once (on a fresh directory, or one whose holder is dead):
    exactly one wins."""
    folder = tmp_path / "run"
    if stale:
        _write_lease(folder, pid=_dead_pid())
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(folder), barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(o for o, _ in outcomes) == ["refused"] * 5 + ["won"]


def test_cli_refuses_a_held_run_before_writing_anything(tmp_path: Path) -> None:
    """`vitsweep run` on a directory whose lease a live process holds (this test): one line naming
    it, exit 2, the directory untouched (no spec.yaml, manifest.json or progress.json)."""
    from tests.support.sweeps import LINEAR, PYTHON, REPO, make_shards, ray_env, write_spec

    make_shards(tmp_path / "shards", 1, 2)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run, models=[{"name": LINEAR, "weights": "factory"}])
    _write_lease(run, run_id="held-run")
    before = (run / LEASE_FILE).read_text()
    for extra in ((), ("--force",)):
        proc = subprocess.run([PYTHON, "-m", "sweep.cli", "run", str(spec), *extra], cwd=REPO, env=ray_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and f"pid {os.getpid()}" in proc.stderr and "held-run" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == [LEASE_FILE] and (run / LEASE_FILE).read_text() == before


def test_a_corrupt_lease_is_taken_over_and_said_so_without_none(tmp_path: Path) -> None:
    """A lease file that is not a holder (garbage bytes) is taken over; the note names no holder
    rather than "None pid None"."""
    from sweep.run.lease import takeover_note

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LEASE_FILE).write_text("{not json")
    lease = Lease.acquire(RunStore(folder))
    try:
        assert lease.took_over is not None
        note = takeover_note(lease.took_over)
        assert "None" not in note and note == "took over an unreadable lease file (no holder could be read from it)"
    finally:
        lease.release()
    assert "None" not in takeover_note({"host": "h", "pid": 7, "age_s": 3})
