"""End to end: `vitsweep dashboard` serves the fixture run and every page renders in headless
Chromium without an error box; a screenshot of each page goes to artifacts/screenshots/.

Needs Debian's `chromium` package (/usr/bin/chromium): the test FAILS, not skips, without it,
because CI installs it. Never runs `playwright install` (no browser downloads).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.runs import make_fixture_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("VITSWEEP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
# (url path, heading); st.navigation derives the url path from each page's file name.
PAGES = [("", "Runs"), ("pairs", "Pairs"), ("distributions", "Distributions"), ("models", "Models"), ("sql", "SQL")]
START_TIMEOUT_S = 120
RENDER_TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vitsweep() -> list[str]:
    script = Path(sys.executable).with_name("vitsweep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweep.cli"]


def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"vitsweep dashboard exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the dashboard did not answer at {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run = make_fixture_run(tmp_path_factory.mktemp("browser"))
    port = _free_port()
    proc = subprocess.Popen(
        [*_vitsweep(), "dashboard", str(run), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert f"http://localhost:{port}" in first, first
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        yield url
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to `vitsweep dashboard` (it stops its Streamlit child and waits for it); if that
    does not end it, SIGKILL the process group this test started (start_new_session)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of this group still there (normally nothing)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); "
            "this test never downloads a browser"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chrome
        finally:
            chrome.close()


def wait_rendered(page: object, heading: str) -> None:
    """Until the script has run, the heading is visible, charts are drawn and images loaded."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=RENDER_TIMEOUT_MS)  # type: ignore[attr-defined]
    title = page.get_by_role("heading", name=heading, level=1)  # type: ignore[attr-defined]
    title.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function(  # type: ignore[attr-defined]
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
            if (document.querySelector('[data-testid="stSkeleton"]')) return false;
            const charts = document.querySelectorAll('.vega-embed');
            for (const c of charts) if (!c.querySelector('canvas, svg')) return false;
            return Array.from(document.images).every(img => img.complete);
        }""",
        timeout=RENDER_TIMEOUT_MS,
        polling=250,
    )
    page.wait_for_timeout(1000)  # type: ignore[attr-defined]  # let layout settle before the screenshot


def screenshot(page: object, heading: str, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main container, so grow the viewport to it."""
    height = page.evaluate(  # type: ignore[attr-defined]
        """() => Math.max(...['[data-testid="stMain"]', '[data-testid="stMainBlockContainer"]']
              .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight), 800)"""
    )
    page.set_viewport_size({"width": 1440, "height": min(int(height) + 80, 8000)})  # type: ignore[attr-defined]
    wait_rendered(page, heading)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    page.set_viewport_size({"width": 1440, "height": 1000})  # type: ignore[attr-defined]


def assert_no_error_box(page: object, where: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')  # type: ignore[attr-defined]
    assert exceptions.count() == 0, f"{where}: exception box: {exceptions.first.inner_text()}"
    errors = page.locator('[data-testid="stAlertContentError"]')  # type: ignore[attr-defined]
    assert errors.count() == 0, f"{where}: error box: {errors.first.inner_text()}"


@pytest.mark.parametrize(("path", "heading"), PAGES, ids=[h for _, h in PAGES])
def test_page_renders(server: str, browser: object, path: str, heading: str) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(page, heading)
        screenshot(page, heading, SHOTS / f"{heading.lower()}.png")
        assert_no_error_box(page, heading)
        # a deep link runs app.py's st.navigation too: titled pages, not file names (no "app" entry)
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()  # type: ignore[attr-defined]
        entries = {line.strip() for line in nav.splitlines()}
        assert {"Runs", "Pairs", "Distributions", "Models", "SQL"} <= entries and "app" not in entries, nav
        body = page.inner_text("body")
        expected = {
            "Runs": ["7 / 8", "Failed units", "Pairs with errors", "max_steps"],  # tables are canvases
            "Pairs": ["source", "matched", "target", "max |Δ| = 2/255"],
            "Distributions": ["Embedding matching", "Local Lipschitz estimates"],
            "Models": ["Claim 1 (equivalence)"],
            "SQL": ["Run query"],
        }[heading]
        for text in expected:
            assert text in body, f"{heading}: {text!r} not on the page"
        if heading == "Pairs":
            assert page.locator('[data-testid="stImage"] img').count() >= 4
        if heading == "Distributions":
            assert page.locator(".vega-embed").count() >= 6
    finally:
        context.close()


def test_sql_console_in_browser(server: str, browser: object) -> None:
    """A refused query shows a warning, not an error box, and a good query after it works."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.goto(f"{server}/sql", wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(page, "SQL")
        editor = page.get_by_label("Query")
        editor.fill("SELECT * FROM read_text('/etc/passwd')")
        page.get_by_role("button", name="Run query").click()
        page.get_by_text("Query refused").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(page, "SQL")
        assert_no_error_box(page, "SQL refused")
        assert "root:" not in page.inner_text("body")
        screenshot(page, "SQL", SHOTS / "sql-refused.png")
        editor.fill("SELECT model, count(*) AS n_rows FROM perturb GROUP BY model ORDER BY model")
        page.get_by_role("button", name="Run query").click()
        page.get_by_text("2 rows").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(page, "SQL")
        assert_no_error_box(page, "SQL after refusal")
        assert page.get_by_text("Query refused").count() == 0
    finally:
        context.close()


# ------------------------------------------------------------------ the multi-model scale fixture

CROSS_JOIN = ("SELECT count(*) FROM lipschitz a, lipschitz b, lipschitz c, lipschitz d, "
              "lipschitz e, lipschitz f")


@pytest.fixture(scope="module")
def scale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from tests.support.runs import make_scale_run

    run = make_scale_run(tmp_path_factory.mktemp("scale"), pairs=240, pairs_per_unit=20)
    port = _free_port()
    proc = subprocess.Popen(
        [*_vitsweep(), "dashboard", str(run), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        yield url, run
    finally:
        stop_server(proc)


def test_scale_fixture_every_page_and_a_stopped_query(scale_server: tuple[str, Path], browser: object) -> None:
    """Every page of a multi-model, multi-setting run renders with no error box; the Runs page
    says what it read; a runaway cross join in the SQL console is stopped with a one-line
    warning and the server keeps serving (the next query and the next page work)."""
    import pyarrow.parquet as pq

    url, run = scale_server
    files = list((run / "results").rglob("*.parquet"))
    n_rows = sum(pq.read_metadata(f).num_rows for f in files)
    n_match = sum(pq.read_metadata(f).num_rows for f in (run / "results" / "match").rglob("*.parquet"))
    context = browser.new_context(viewport={"width": 1440, "height": 1000})  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        for path, heading in PAGES:
            page.goto(f"{url}/{path}", wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
            wait_rendered(page, heading)
            assert_no_error_box(page, f"scale {heading}")
            if heading == "Runs":
                body = page.inner_text("body")
                assert f"{len(files):,} Parquet files" in body and f"{n_rows:,} rows" in body, body[-2000:]
            if heading == "Distributions":
                assert page.locator(".vega-embed").count() >= 5
        page.get_by_role("spinbutton", name="Time limit (s)").fill("1")
        page.get_by_label("Query").fill(CROSS_JOIN)
        page.get_by_role("button", name="Run query").click()
        page.get_by_text("Query stopped after 1 s").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(page, "SQL")
        assert_no_error_box(page, "SQL stopped")
        screenshot(page, "SQL", SHOTS / "sql-stopped.png")
        page.get_by_label("Query").fill("SELECT count(*) AS n_rows FROM match")
        page.get_by_role("button", name="Run query").click()
        page.get_by_text("1 rows").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
        assert page.get_by_text("Query stopped").count() == 0
        other = context.new_page()  # another session is served too
        other.goto(f"{url}/pairs", wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(other, "Pairs")
        assert_no_error_box(other, "Pairs after the stopped query")
        assert f"{n_match:,} pairs" in other.inner_text("body")
    finally:
        context.close()
