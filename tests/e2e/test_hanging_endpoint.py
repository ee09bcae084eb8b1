"""An object store endpoint that accepts connections and never answers (issue 24 item 8): `vitsweep
run` into it used to sit silent for minutes; now it says what it is waiting on within
$VITSWEEP_SLOW_WARN_S seconds (2 here), and goes on saying it. No Ray is started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.support.sweeps import LINEAR, REPO, make_shards, write_spec


@pytest.fixture()
def hanging_endpoint() -> str:
    """http://127.0.0.1:PORT that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.timeout(300)
def test_run_into_a_hanging_endpoint_warns_within_seconds(tmp_path: Path, hanging_endpoint: str) -> None:
    make_shards(tmp_path / "shards", 1, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), None,
                      models=[{"name": LINEAR, "weights": "factory"}], probes=["match"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": hanging_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "VITSWEEP_SLOW_WARN_S": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(spec), "--out", "s3://bucket/run"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        started = time.monotonic()
        assert proc.stderr is not None
        while time.monotonic() - started < 120:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "still waiting on" in line:
                break
        waited = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    warnings = [line for line in lines if "still waiting on" in line]
    assert warnings, lines
    assert warnings[0].startswith("vitsweep run: warning: still waiting on the run directory's lease"), warnings
    assert "Traceback" not in "".join(lines)
    assert waited < 90, waited
