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


CROSS_JOIN = ("SELECT count(*) FROM lipschitz a, lipschitz b, lipschitz c, lipschitz d, "
              "lipschitz e, lipschitz f, lipschitz g")


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.runs import make_fixture_run

    return make_fixture_run(tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("after_s", [1, 6])
def test_ctrl_c_during_query_is_one_line_and_130(fixture_run: Path, after_s: float) -> None:
    """Item 7: DuckDB turns Ctrl-C into RuntimeError("Query interrupted"), which used to end in a
    traceback and exit 1, or misses it (a Ctrl-C while the views are made, or inside a join that
    does not look at signals, and the query ran on); now "vitsweep query: interrupted" and 130,
    as replay does, within seconds."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", "query", str(fixture_run), CROSS_JOIN,
                             "--timeout", "0"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(after_s)  # during start-up, the views or the query (which runs for hours)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert _one_line(err) == "vitsweep query: interrupted"
    assert out == ""


def test_the_ctrl_c_watcher_ends_with_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher is woken when the command ends, not left to its next look: it used to add up
    to half a second to every command. With a look once an hour it must still be gone when
    `_ctrl_c()` returns (which waits 2 s for it at most)."""
    import signal
    import threading

    from sweep import cli

    monkeypatch.setattr(cli, "WATCH_POLL_S", 3600.0)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a plain `vitsweep`
    try:
        with cli._ctrl_c():
            watchers = [t for t in threading.enumerate() if t.name == "vitsweep-ctrl-c"]
            assert len(watchers) == 1 and watchers[0].is_alive()
        assert not watchers[0].is_alive()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("value", ["1e10", "1e300", "nan"])
def test_query_timeout_it_cannot_wait_for_is_one_line(fixture_run: Path, value: str) -> None:
    """Item 8: --timeout 1e10 / 1e300 ended in the watchdog's OverflowError traceback (exit 0), and
    nan silently meant no limit: now one line, exit 2, before the run is opened."""
    done = run_cli("query", fixture_run, "SELECT 1", "--timeout", value, env=ENV)
    assert done.returncode == 2, done
    assert "--timeout" in _one_line(done.stderr)


@pytest.mark.parametrize("value", ["inf", "0"])
def test_query_timeout_inf_means_no_limit(fixture_run: Path, value: str) -> None:
    done = run_cli("query", fixture_run, "SELECT 42 AS x", "--timeout", value, "--format", "csv", env=ENV)
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == ["x", "42"] and done.stderr == ""


def test_cpu_calibrated_plan_says_cpu_and_keeps_small_seconds(tmp_path: Path) -> None:
    """Item 12: a plan calibrated on the CPU said "GPU-h" and "on 1 GPU(s)", and --json rounded a
    small sweep's seconds and GPU-hours to 0.0."""
    from tests.support.sweeps import LINEAR, make_shards, write_spec

    make_shards(tmp_path / "shards", 1, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run",
                      models=[{"name": LINEAR, "weights": "factory"}],
                      probes=[{"name": "match", "params": {"max_steps": 2}}], batch_size=2)
    done = run_cli("plan", spec, "--calibrate", "--device", "cpu", "--json", cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done
    plan = json.loads(done.stdout)
    assert plan["device"] == "cpu" and plan["calibrated"] is True
    assert 0 < plan["seconds"] < 0.05, plan["seconds"]  # milliseconds of a linear model, kept
    assert plan["gpu_hours"] > 0 and plan["wall_seconds"] > 0
    text = run_cli("plan", spec, "--calibrate", "--device", "cpu", cwd=tmp_path, env=ENV)
    assert text.returncode == 0, text
    assert "GPU" not in text.stdout and "CPU-hours" in text.stdout and "on 1 CPU(s)" in text.stdout
    assert "CPU-h ≤" in text.stdout


def test_plan_summary_on_cpu_and_on_the_rate_table() -> None:
    """The one line `vitsweep run` prints: CPU-h on 1 CPU when calibrated on a CPU; GPU-h otherwise."""
    from sweep.planning.table import Plan, Row
    from sweep.probes.base import Passes

    row = Row("m", "w", "match", "h", "s", 1, 2, Passes(plain=3), Passes(plain=3), seconds_per_pair=0.001,
              seconds_per_pair_expected=0.001, rate_source="measured now on CPU")
    cpu = Plan("spec.yaml", 1, 0, 1, 2, 2, [row], 1, 0.002, calibrated=True, cpu=True)
    assert "CPU-h (measured now): ≤ 0 s on 1 CPU" in cpu.summary() and "GPU" not in cpu.summary()
    assert cpu.to_json()["seconds"] == 0.002 and cpu.to_json()["gpu_hours"] == pytest.approx(0.002 / 3600, rel=1e-3)
    gpu = Plan("spec.yaml", 1, 0, 1, 2, 2, [row], 2, 0.002)
    assert "GPU-h (H100 rate table): ≤ 0 s on 2 GPUs" in gpu.summary() and gpu.to_json()["device"] == "gpu"


def test_run_help_names_the_number_of_units_that_needs_yes() -> None:
    """Item 12: `vitsweep run --help` printed the literal name CONFIRM_UNITS."""
    from sweep.run.driver import CONFIRM_UNITS

    done = run_cli("run", "--help", env=ENV)
    assert done.returncode == 0, done
    assert "CONFIRM_UNITS" not in done.stdout
    assert f"More than {CONFIRM_UNITS} units to run needs --yes" in " ".join(done.stdout.split())
