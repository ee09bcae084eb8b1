"""Hardening of `vitsweep run` on a real local Ray, each as a user runs it (a subprocess):
SIGTERM stops cleanly and a rerun resumes; provenance of every invocation is kept; a corrupt
unit file is redone; no-terminal progress lines; the bar survives Ray's start-up warning;
failed units are listed; Ctrl-C while Ray starts leaves no Ray process."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.sweeps import (
    SLOW_MATCH,
    LINEAR,
    REPO,
    SLOW,
    kill_ray_processes,
    make_shards,
    ray_env,
    ray_pids,
    read_table,
    units_mtimes,
    write_spec,
)

pytestmark = pytest.mark.slow


@pytest.fixture()
def env() -> Iterator[dict[str, str]]:
    env = ray_env()
    yield env
    kill_ray_processes(env["RAY_TMPDIR"])
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _start(spec: Path, env: dict[str, str], *extra: str, **popen) -> subprocess.Popen:
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(spec), *extra], cwd=REPO, env=env,
                            text=True, **popen)


def _wait_for_reported_units(run: Path, n: int, proc: subprocess.Popen, timeout_s: float = 500) -> None:
    """Until the driver has counted n finished units (progress.json, written atomically)."""
    deadline = time.monotonic() + timeout_s
    while True:
        path = run / "progress.json"
        if path.is_file() and json.loads(path.read_text())["units_done"] >= n:
            return
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no unit finished in time"
        time.sleep(0.2)


@pytest.mark.timeout(1200)
def test_sigterm_stops_cleanly_and_every_invocation_is_recorded(tmp_path: Path, env: dict[str, str]) -> None:
    make_shards(tmp_path / "shards", 4, 3)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": SLOW, "weights": "factory"}], probes=SLOW_MATCH, batch_size=3)

    # SIGTERM (what `timeout` and `ray job stop` send) once a unit is done: as Ctrl-C
    proc = _start(spec, env, "--actors", "1", "--no-progress")
    _wait_for_reported_units(run, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "SIGTERM received" not in err
    assert err.strip().splitlines()[-1] == (
        "vitsweep run: interrupted; finished units are kept, rerun the same command to resume")
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "interrupted"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "interrupted" and manifest["devices"]
    first = units_mtimes(run)
    assert 1 <= progress["units_done"] <= len(first) < 4
    # no terminal: one line per unit the driver saw finish
    assert sum(" done " in line for line in err.splitlines()) == progress["units_done"]

    # a finished unit's file goes corrupt; the rerun reports it, redoes that unit, resumes the
    # rest without redoing the other finished units, and its final line counts the whole run
    victim = sorted((run / "results" / "units").rglob("*.parquet"))[0]
    victim.write_bytes(b"PAR1 this is not parquet")
    kept = {k: v for k, v in first.items() if k != victim.stem}
    proc = _start(spec, env, "--actors", "1", "--no-progress")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    assert f"{victim}: unreadable units file" in err and "Traceback" not in err
    assert {k: v for k, v in units_mtimes(run).items() if k in kept} == kept
    assert f"4/4 units done ({len(kept)} already done), 12 pairs ok, 0 pairs with errors" in out
    assert read_table(run, "units").num_rows == 4 and read_table(run, "match").num_rows == 12

    # a rerun with nothing to do keeps every earlier invocation's provenance and the totals
    proc = _start(spec, env, "--actors", "1", "--no-progress")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "4/4 units done (4 already done), 12 pairs ok" in out
    manifest = json.loads((run / "manifest.json").read_text())
    invocations = manifest["invocations"]
    assert [i["state"] for i in invocations] == ["interrupted", "finished", "finished"]
    assert all(i["devices"] and i["cluster"]["actors"] == 1 for i in invocations[:2])
    assert invocations[2]["devices"] == [] and invocations[2]["units_run"] == 0
    assert sum(i["units_run"] for i in invocations) == 4 + 1  # the redone unit counts twice
    assert manifest["devices"] and manifest["cluster"]["actors"] == 1
    assert (manifest["units_done"], manifest["pairs_done"], manifest["pairs_error"]) == (4, 12, 0)
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["units_done"], progress["pairs_done"]) == (4, 12)


def test_bar_failed_units_and_compile_on_cpu(tmp_path: Path, env: dict[str, str]) -> None:
    """With a terminal: no Ray token-authentication warning (the mode is unset here, where Ray
    used to warn on every start) and the bar; `compile: true` on CPU actors is one line; failed
    units are listed with their reasons."""
    make_shards(tmp_path / "shards", 1, 2)
    run = tmp_path / "run"
    models = [{"name": LINEAR, "weights": "factory"}, {"name": "tests.support.encoders:broken_factory", "weights": "factory"}]
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run, models=models,
                      probes=["match"], max_attempts=1, compile=True)
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}  # Ray warns when the mode is unset
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    proc = _start(spec, env, "--actors", "1", stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    out, _ = proc.communicate(timeout=400)
    os.close(leader)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    # Ray's token-authentication note on every local start is noise, dropped (issue 24 item 12)
    assert "Token authentication" not in err and "sweep:" in err, err
    assert err.count("compile: true is ignored on CPU actors") == 1
    failed = [line for line in out.splitlines() if line.startswith("failed unit ")]
    assert len(failed) == 1 and "broken_factory" in failed[0] and "RuntimeError" in failed[0], out
    assert "1/2 units done (0 already done, 1 failed)" in out


@pytest.mark.timeout(900)
def test_ctrl_c_while_ray_starts_leaves_no_ray_process_and_no_run(tmp_path: Path, env: dict[str, str],
                                                                  busy_cores: int) -> None:
    """Both cores busy (busy_cores): the Ctrl-C used to be lost there and the run finished."""
    make_shards(tmp_path / "shards", 1, 2)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run)
    proc = _start(spec, env, "--actors", "1", "--no-progress")
    deadline = time.monotonic() + 120
    while not [p for p in ray_pids(env["RAY_TMPDIR"]) if p != proc.pid]:  # Ray's first process is up
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 20
    while ray_pids(env["RAY_TMPDIR"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_pids(env["RAY_TMPDIR"]) == []
    assert not run.exists()
