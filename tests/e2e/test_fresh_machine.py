"""A fresh machine: `make test` makes sure the dashboard tests' browser is there (Debian's chromium,
installed with apt-get only when running as root) and otherwise stops with one line naming the
command to run, before any test runs; `.ci/run` is nothing but `make test`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make(tmp_path: Path, browser: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`make test` with the venv stood in for: STAMP is an up-to-date file (no install) and PY a
    script that records its arguments instead of running pytest."""
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (4102444800, 4102444800))  # newer than pyproject.toml: nothing to install
    record = tmp_path / "pytest-ran"
    fake_py = tmp_path / "python"
    fake_py.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    fake_py.chmod(0o755)
    full_env = {k: v for k, v in os.environ.items() if k not in ("VITSWEEP_NO_APT", "MAKEFLAGS")}
    full_env.update({"VITSWEEP_CHROMIUM": browser, **env})
    proc = subprocess.run(
        ["make", "--no-print-directory", "test", f"STAMP={stamp}", f"PY={fake_py}"],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc, record


def test_make_test_stops_with_one_line_when_the_browser_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-chromium"
    proc, record = _make(tmp_path, str(missing), VITSWEEP_NO_APT="1")
    assert proc.returncode != 0
    assert not record.exists(), "pytest ran although the browser is missing"
    ours = [line for line in proc.stderr.splitlines() if line.startswith("ensure-chromium:")]
    assert len(ours) == 1, proc.stderr
    assert str(missing) in ours[0] and "apt-get install -y chromium" in ours[0]
    assert "Traceback" not in proc.stderr


def test_make_test_runs_pytest_when_the_browser_is_there(tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\nexit 0\n")
    browser.chmod(0o755)
    proc, record = _make(tmp_path, str(browser), VITSWEEP_NO_APT="1")
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().split() == ["-m", "pytest", "-q"]


def test_default_browser_missing_without_apt_names_the_install_command(tmp_path: Path) -> None:
    """The package's path missing, apt forbidden (as for a user who is not root): one line naming apt-get."""
    package_path = tmp_path / "usr-bin-chromium"
    env = {k: v for k, v in os.environ.items() if k != "VITSWEEP_CHROMIUM"}
    env.update(VITSWEEP_NO_APT="1", VITSWEEP_CHROMIUM_PACKAGE_PATH=str(package_path))
    proc = subprocess.run([str(ROOT / ".ci" / "ensure-chromium")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "apt-get install -y chromium" in proc.stderr
    assert f"{package_path} not found" in proc.stderr


def test_ci_run_only_calls_make_test() -> None:
    commands = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]  # fmt: skip
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]


def _fake_apt(tmp_path: Path, succeed: bool) -> tuple[dict[str, str], Path, Path]:
    """A PATH whose `apt-get` logs its arguments (and, on install, puts a browser where Debian's
    package would), so the root branch runs without touching this machine."""
    bin_dir, log, browser = tmp_path / "bin", tmp_path / "apt.log", tmp_path / "usr-bin-chromium"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(
        "#!/bin/sh\n"
        f'echo "$DEBIAN_FRONTEND $*" >> {log}\n'
        + (f'case "$*" in *install*) printf "#!/bin/sh\\n" > {browser}; chmod +x {browser};; esac\nexit 0\n'
           if succeed else "exit 100\n")
    )
    (bin_dir / "apt-get").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VITSWEEP_CHROMIUM", "VITSWEEP_NO_APT")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", VITSWEEP_CHROMIUM_PACKAGE_PATH=str(browser))
    return env, log, browser


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get branch runs as root only")
def test_as_root_it_installs_debians_chromium_with_apt(tmp_path: Path) -> None:
    env, log, browser = _fake_apt(tmp_path, succeed=True)
    proc = subprocess.run([str(ROOT / ".ci" / "ensure-chromium")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == ["noninteractive update -qq", "noninteractive install -y -qq chromium"]
    assert browser.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get branch runs as root only")
def test_a_failed_apt_install_is_one_line(tmp_path: Path) -> None:
    env, log, browser = _fake_apt(tmp_path, succeed=False)
    proc = subprocess.run([str(ROOT / ".ci" / "ensure-chromium")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and not browser.exists()
    ours = [line for line in proc.stderr.splitlines() if line.startswith("ensure-chromium:")]
    assert len(ours) == 1 and "apt-get update && apt-get install -y chromium" in ours[0]
