"""The built wheel on its own: it builds without warnings, carries the example specs, and runs
`vitsweep init`, `vitsweep demo` and `vitsweep dashboard` (a page in headless Chromium) from a
temporary install with no checkout on the path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_NOISE = re.compile(r"deprecat|BuildBackendWarning|SetuptoolsWarning|^\s*warning:", re.IGNORECASE | re.MULTILINE)


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(site folder with the wheel installed into it, the verbose build log)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy: an in-tree build would leave build/ in the checkout (and reuse a stale one).
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "artifacts", "demo-run*", "__pycache__", ".pytest_cache",
        ".bench-cache", ".mutants"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp / "dist"), str(source)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    (wheel,) = (tmp / "dist").glob("vitsweep-*.whl")
    site = tmp / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    yield site, log


def _isolated(site: Path) -> dict[str, str]:
    """Environment where `sweep` can come only from `site` (plus the venv's dependencies)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, "PYTHONPATH": str(site), "RAY_AUTH_MODE": "disabled"}


def _vitsweep(site: Path, cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    # -P: never put the working folder on sys.path (it is outside the checkout anyway)
    return subprocess.run(
        [sys.executable, "-P", "-m", "sweep.cli", *args],
        cwd=cwd, env=_isolated(site), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_wheel_builds_without_warnings(wheel_install: tuple[Path, str]) -> None:
    _, log = wheel_install
    assert "Successfully built vitsweep" in log
    noise = [m.group(0) for m in BUILD_NOISE.finditer(log)]
    assert not noise, [line for line in log.splitlines() if BUILD_NOISE.search(line)][:5]


def test_installed_package_comes_from_the_wheel_and_carries_the_specs(wheel_install: tuple[Path, str], tmp_path: Path) -> None:
    site, _ = wheel_install
    code = "import sweep, analysis, dashboard, sys; print(sweep.__file__, analysis.__file__, dashboard.__file__)"
    where = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=_isolated(site),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(site), f"{path} is not from the installed wheel"
    for name in ("demo.yaml", "imagenet-val.yaml"):
        assert (site / "sweep" / "examples" / name).read_text() == (ROOT / "sweep" / "examples" / name).read_text()

    init = _vitsweep(site, tmp_path, "init", "specs")
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "specs" / "demo.yaml").read_text() == (ROOT / "sweep" / "examples" / "demo.yaml").read_text()


@pytest.mark.slow
def test_wheel_alone_runs_the_demo(wheel_install: tuple[Path, str], tmp_path: Path) -> None:
    site, _ = wheel_install
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = tmp_path / "demo"
    proc = _vitsweep(site, work, "demo", "--pairs", "2", "--no-progress", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model and weights" in proc.stdout and "random:0" in proc.stdout
    counts = dict(duckdb.sql(
        f"SELECT probe, sum(n_ok) FROM read_parquet('{out}/results/units/*/*/*.parquet') "
        "WHERE status = 'ok' GROUP BY probe"
    ).fetchall())  # fmt: skip
    assert counts == {"match": 2, "perturb": 2, "lipschitz": 2}


@pytest.mark.slow
def test_wheel_alone_serves_the_dashboard(wheel_install: tuple[Path, str], tmp_path: Path) -> None:
    """`vitsweep dashboard` from the install (dashboard/serve.py, the app and its pages are package
    data) serves a run, and its Models page renders in Chromium with no error box."""
    import signal
    import socket
    import time
    import urllib.request

    from tests.support.runs import make_fixture_run
    from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, pick_question, wait_rendered

    site, _ = wheel_install
    run = make_fixture_run(tmp_path / "fixture")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-P", "-m", "sweep.cli", "dashboard", str(run), "--port", str(port)],
                            cwd=tmp_path, env=_isolated(site), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the installed dashboard did not answer"
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            chrome = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = chrome.new_page()
                page.goto(f"http://127.0.0.1:{port}/models", wait_until="domcontentloaded")
                wait_rendered(page, "Models")
                pick_question(page, "equivalence")  # its description comes from the installed SQL files
                assert page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count() == 0
                body = page.inner_text("body")
                assert "Verdicts" in body and "Claim 1 (equivalence)" in body
            finally:
                chrome.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 0
