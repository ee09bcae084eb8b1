"""End to end: `vitsweep dashboard` serves the fixture run and every page renders in headless
Chromium without an error box; a screenshot of each page goes to artifacts/screenshots/.

Needs Debian's `chromium` package (/usr/bin/chromium): the test FAILS, not skips, without it,
because CI installs it. Never runs `playwright install` (no browser downloads).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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


@contextlib.contextmanager
def served(run: Path) -> Iterator[tuple[str, str]]:
    """`vitsweep dashboard RUN` on a free port, as a user starts it: yields (the URL, the first
    line it printed) once the server answers, and stops it after."""
    port = _free_port()
    proc = subprocess.Popen(
        [*_vitsweep(), "dashboard", str(run), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        yield url, first
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served(make_fixture_run(tmp_path_factory.mktemp("browser"))) as (url, first):
        assert f"http://localhost:{url.rsplit(':', 1)[1]}" in first, first
        yield url


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


def pick_question(page: object, name: str) -> None:
    """On the Models page, pick the headline question `name` (a radio option) and wait until its
    numbers are drawn: a first visit shows none."""
    option = page.locator('[data-testid="stRadio"] label').filter(  # type: ignore[attr-defined]
        has_text=re.compile(rf"^{re.escape(name)}$"))
    option.first.click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(  # type: ignore[attr-defined]
        state="visible", timeout=RENDER_TIMEOUT_MS)
    wait_rendered(page, "Models")


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
        if heading == "Models":  # a first visit draws the verdicts only: no table, no question's numbers
            body = page.inner_text("body")
            assert "Verdicts at a glance" in body and "Pick a question" in body
            assert "Claim 1 (equivalence)" not in body
            assert page.locator('[data-testid="stDataFrame"]').count() == 0
            pick_question(page, "equivalence")  # its verdict rows and its numbers: two tables
            tables = page.locator('[data-testid="stDataFrame"]')
            assert tables.count() == 2
            page.get_by_text("Every verdict, and the settings' parameters").click()  # drawn once opened
            page.wait_for_function("document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 4",
                                   timeout=RENDER_TIMEOUT_MS)
            wait_rendered(page, heading)
            assert tables.count() == 4
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
    with served(run) as (url, _):
        yield url, run


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


# ------------------------------------------------------------------ verdicts at a glance (issue 25)

GLANCE_VIEWPORT = {"width": 1300, "height": 900}
DESCRIPTION = re.compile(r"claim=(\w+); config_hash=([^;]+); statistic=(\w+); estimate=([^;]+); "
                         r"ci_low=([^;]+); ci_high=([^;]+); threshold=(.+)$")


def _claims(run: Path) -> list[dict[str, object]]:
    from analysis.claims import claims_records, load_criteria
    from analysis.db import open_runs

    con = open_runs([run], snapshot=True)
    try:
        return claims_records(con, load_criteria())
    finally:
        con.close()


def _checks(claims: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """(claim, config_hash, statistic, estimate, ci_low, ci_high, threshold) of every check."""
    def num(v: object) -> float | None:
        return None if v is None or (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")))) else float(v)  # type: ignore[arg-type]

    return sorted(((c["claim"], c["config_hash"], ch["statistic"], num(ch["estimate"]), num(ch["ci_low"]),
                    num(ch["ci_high"]), num(ch["threshold"]))
                   for c in claims for ch in c["checks"]), key=repr)  # type: ignore[union-attr]


def _parse(value: str) -> float | None:
    return None if value in ("None", "nan", "inf", "-inf") else float(value)


def assert_grid_above_the_fold(page: object, where: str, scroller: str) -> None:
    """The whole grid inside the 1300 x 900 viewport, and nothing to scroll sideways."""
    box = page.evaluate(  # type: ignore[attr-defined]
        """(scroller) => { const g = document.querySelector('[data-testid="verdict-grid"]').getBoundingClientRect();
             const s = document.querySelector(scroller) || document.documentElement;
             return {top: g.top, bottom: g.bottom, left: g.left, right: g.right,
                     sw: s.scrollWidth, cw: s.clientWidth, dsw: document.documentElement.scrollWidth}; }""",
        scroller,
    )
    assert 0 <= box["top"] and box["bottom"] <= 900, f"{where}: grid not above the fold: {box}"
    assert 0 <= box["left"] and box["right"] <= 1300, f"{where}: grid wider than the page: {box}"
    assert box["sw"] <= box["cw"] and box["dsw"] <= 1300, f"{where}: horizontal scroll: {box}"


def check_models_glance(url: str, run: Path, browser: object, shot: Path) -> None:
    claims = _claims(run)
    context = browser.new_context(viewport=GLANCE_VIEWPORT)  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.goto(f"{url}/models", wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
        wait_rendered(page, "Models")
        assert_no_error_box(page, "Models glance")
        assert_grid_above_the_fold(page, "Models", '[data-testid="stMain"]')
        cells = page.locator('[data-testid="verdict-grid"] td[data-claim]')
        every = [(cells.nth(i).get_attribute("data-claim"), cells.nth(i).get_attribute("data-verdict"))
                 for i in range(cells.count())]
        shown = sorted(cell for cell in every if cell[1])  # "—" cells: a model without that claim (the control)
        assert shown == sorted((c["claim"], c["verdict"]) for c in claims)
        first_verdict = next(i for i, cell in enumerate(every) if cell[1])
        assert "threshold" in (cells.nth(first_verdict).get_attribute("title") or "")  # the tooltip survives st.html
        # a forest plot per claim, each dot labelled with the claims row it draws
        n_claims = len({c["claim"] for c in claims})
        page.wait_for_function(f"document.querySelectorAll('.vega-embed svg').length >= {n_claims}",
                               timeout=RENDER_TIMEOUT_MS)
        labels = page.evaluate(
            "() => Array.from(document.querySelectorAll('.vega-embed svg [aria-label]'))"
            ".map(e => e.getAttribute('aria-label')).filter(s => s.startsWith('claim='))")
        drawn = sorted({(m.group(1), m.group(2), m.group(3), *map(_parse, m.groups()[3:]))
                        for m in map(DESCRIPTION.match, labels) if m}, key=repr)
        expected = [c for c in _checks(claims) if c[3] is not None]  # dots: finite estimates
        assert drawn == sorted(set(expected), key=repr)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))  # the first screen: what a reader sees at 1300 x 900
    finally:
        context.close()


def check_report_glance(run: Path, out: Path, browser: object, shot: Path) -> None:
    from analysis.report import write_report

    paths = write_report([run], out)
    numbers = json.loads(paths["json"].read_text())
    context = browser.new_context(viewport=GLANCE_VIEWPORT)  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.goto(paths["html"].as_uri(), wait_until="load", timeout=RENDER_TIMEOUT_MS)
        assert_grid_above_the_fold(page, "report", "html")
        claims = sorted({c["claim"] for c in numbers["claims"]})
        figs = page.locator("figure.forest img")
        assert sorted(page.locator("figure.forest").nth(i).get_attribute("data-claim")
                      for i in range(figs.count())) == claims
        assert all(figs.nth(i).evaluate("img => img.complete && img.naturalWidth > 200")
                   for i in range(figs.count()))
        points = page.evaluate(
            """() => Array.from(document.querySelectorAll('tr.forest-point')).map(r => [r.dataset.claim,
                 r.dataset.configHash, r.dataset.statistic, r.dataset.estimate, r.dataset.ciLow,
                 r.dataset.ciHigh, r.dataset.threshold])""")
        shown = sorted((p[0], p[1], p[2], *(float(v) if v else None for v in p[3:])) for p in points)
        assert sorted(shown, key=repr) == _checks(numbers["claims"])
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
    finally:
        context.close()


def check_glance(run: Path, root: Path, browser: object, name: str) -> None:
    """The report's and (on a dashboard of its own) the Models page's glance checks on `run`."""
    check_report_glance(run, root / "report", browser, SHOTS / f"glance-report-{name}.png")
    with served(run) as (url, _):
        check_models_glance(url, run, browser, SHOTS / f"glance-models-{name}.png")


def test_verdicts_at_a_glance_claims_run(tmp_path_factory: pytest.TempPathFactory, browser: object) -> None:
    """A run with the demo's verdicts (tests/support/claim_runs.py): in the report and on the
    Models page at 1300 x 900 the grid is whole above the fold, with no horizontal scroll; a
    forest plot per claim, drawing the claims rows' numbers."""
    from tests.support.claim_runs import make_claims_run

    root = tmp_path_factory.mktemp("glance")
    run, _ = make_claims_run(root, "demo")
    check_glance(run, root, browser, "claims")


def test_verdicts_at_a_glance_scale_run(scale_server: tuple[str, Path], browser: object,
                                        tmp_path: Path) -> None:
    """The same on the multi-model, two-settings-per-probe scale fixture: sub-rows per setting."""
    url, run = scale_server
    check_report_glance(run, tmp_path / "report", browser, SHOTS / "glance-report-scale.png")
    check_models_glance(url, run, browser, SHOTS / "glance-models-scale.png")


def test_verdicts_at_a_glance_geometry_run(tmp_path_factory: pytest.TempPathFactory, browser: object) -> None:
    """A run with probe `equivalence` beside the others: the grid grows the columns
    large_equivalence and piecewise_linear and still fits 1300 px; their forest plots draw the
    claims rows, in the report and on the Models page."""
    from tests.support.runs import make_fixture_run

    root = tmp_path_factory.mktemp("glance-geometry")
    run = make_fixture_run(root, geometry=True)
    assert {"large_equivalence", "piecewise_linear"} <= {c["claim"] for c in _claims(run)}
    check_glance(run, root, browser, "geometry")
