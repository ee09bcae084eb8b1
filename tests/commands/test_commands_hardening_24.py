"""Issue 24, the commands' part: `labels` takes the run's lease, Ctrl-C during `query` is one line
and exit 130, `query --timeout` refuses what it cannot wait for, `plan` says CPU when it is, keeps
small seconds in --json, and `run --help` names the number of units that needs --yes. Each runs
the real CLI (in this process where that reaches the same code) and asserts one line, no traceback."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from tests.support.cli_inproc import run_cli
from tests.support.sweeps import REPO

from sweep.run.lease import LEASE_FILE, _now, _pid_started

ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "RAY_USAGE_STATS_ENABLED": "0"}


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _live_lease(run: Path) -> dict:
    """A lease held by this process (alive on this host), as a running driver's."""
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _pid_started(os.getpid()),
              "run_id": "live-run", "token": "driver", "acquired_at": _now(), "heartbeat_at": _now(),
              "heartbeat_s": 30.0, "timeout_s": 120.0, "took_over": None}
    (run / LEASE_FILE).write_text(json.dumps(holder))
    return holder


def test_labels_is_refused_while_a_driver_holds_the_run(tmp_path: Path) -> None:
    """Item 3: `vitsweep labels RUN` during a live run relabelled the partial run (the driver's
    own pass then replaced it); now it is refused, one line, exit 2, and the lease is left alone."""
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    holder = _live_lease(run)
    before = (run / LEASE_FILE).read_text()
    done = run_cli("labels", run, "--device", "cpu", cwd=tmp_path, env=ENV)
    assert done.returncode == 2, done
    line = _one_line(done.stderr)
    assert line.startswith("vitsweep labels: error: ") and f"pid {holder['pid']}" in line, line
    assert "being driven by" in line
    assert (run / LEASE_FILE).read_text() == before


def test_labels_takes_and_releases_the_lease(tmp_path: Path) -> None:
    """With no driver, `labels` holds the lease while it works and removes it afterwards (here the
    run has no finished unit: its own one-line refusal, and no lease left behind)."""
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    done = run_cli("labels", run, "--device", "cpu", cwd=tmp_path, env=ENV)
    assert done.returncode == 2, done
    assert "no finished units" in _one_line(done.stderr)
    assert not (run / LEASE_FILE).exists()
