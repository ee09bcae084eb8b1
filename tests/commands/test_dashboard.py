"""`vitsweep dashboard`: argument checks, the exact Streamlit command, and no torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sweep.cli import main
from sweep.commands import dashboard

REPO = Path(__file__).resolve().parents[2]


def test_missing_run_dir_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-run"
    assert main(["dashboard", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "no such run directory" in lines[0] and str(missing) in lines[0]


def test_file_instead_of_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "run.txt"
    f.write_text("x")
    assert main(["dashboard", str(f)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_console_script_missing_dir(tmp_path: Path) -> None:
    """The real entry point in a fresh process: exit 2, one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "dashboard", str(tmp_path / "nope")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_streamlit_command_line(tmp_path: Path) -> None:
    cmd = dashboard.streamlit_command([tmp_path], "127.0.0.1", 8765)
    assert cmd[:4] == [sys.executable, "-m", "dashboard.serve", "run"]
    assert cmd[4].endswith("dashboard/app.py") and Path(cmd[4]).is_file()
    joined = " ".join(cmd)
    for flag in ("--server.headless true", "--server.address 127.0.0.1", "--server.port 8765",
                 "--browser.gatherUsageStats false", "--server.fileWatcherType none",
                 "--runner.postScriptGC false"):
        assert flag in joined
    assert cmd[-2:] == ["--", str(tmp_path)]


def test_default_host_is_loopback() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    dashboard.register(parser)
    args = parser.parse_args(["somewhere"])
    assert args.host == "127.0.0.1" and args.port == 8501


def test_dashboard_command_does_not_import_torch() -> None:
    code = (
        "import sys, argparse\n"
        "from sweep.commands import dashboard\n"
        "import dashboard.data, dashboard.charts, dashboard.images, dashboard.pairview, dashboard.common\n"
        "import dashboard.serve\n"
        "bad = [m for m in ('torch', 'ray', 'timm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_sigterm_stops_streamlit_too(tmp_path: Path) -> None:
    """`vitsweep dashboard` serves, and a SIGTERM to it alone also stops the Streamlit server."""
    import os
    import signal
    import socket
    import time
    import urllib.request

    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "dashboard", str(run), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    health = f"http://127.0.0.1:{port}/_stcore/health"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        assert proc.stdout is not None
        assert f"http://localhost:{port}" in proc.stdout.readline()
        deadline = time.monotonic() + 120
        while not healthy():
            assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not healthy(), "Streamlit kept running after vitsweep dashboard stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything left of the group this test started
        except ProcessLookupError:
            pass


def test_a_copied_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 item 1: a run and its copy (one run_id) would show every row twice."""
    import shutil

    from tests.support.runs import make_fixture_run

    run = make_fixture_run(tmp_path / "a")
    shutil.copytree(run, tmp_path / "copy")
    assert main(["dashboard", str(run), str(tmp_path / "copy")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "same run" in lines[0], lines
