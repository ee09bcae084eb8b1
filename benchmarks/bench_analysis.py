"""Analysis at scale: named queries, `vitsweep report` and every dashboard page on a large run.

Builds (once; cached under .bench-cache/ in the repository, which git ignores) a synthetic run the
size of one ImageNet-val sweep with the engine's own writer and schemas (tests/support/runs.py,
`make_scale_run`: 3 models x match, perturb and lipschitz, two settings per probe, errors, failed
units, galleries), then measures, in this one process:

    baseline    a plain DuckDB `SELECT count(*) FROM read_parquet([...every file...])`, in process
    named       every named query through `vitsweep query RUN --named NAME` (a fresh process each:
                wall time and the process's peak RSS, from os.wait4)
    report      `vitsweep report RUN --out DIR` (wall time, peak RSS)
    dashboard   `vitsweep dashboard RUN`, each page in headless Chromium (Playwright driving
                /usr/bin/chromium), until the page has rendered: its first visit (a new browser
                session; the server's caches cold for it), a return to it in one browser session
                by its sidebar link (the issue's "second visit (cached)"), and a reload in a new
                browser session (Streamlit boots the page in the browser again)

and prints each figure with its ratio to the baseline, and CPU seconds (of the query or report
process, of the dashboard server during a visit): on a shared machine wall time follows the others'
load, CPU time much less. It ends with a table of the issue's goals, met or not, and the load
average before and after.

    .venv/bin/python -m benchmarks.bench_analysis                  # the issue's size: 75,000 pairs
    .venv/bin/python -m benchmarks.bench_analysis --quick          # 3,000 pairs, for trying
    .venv/bin/python -m benchmarks.bench_analysis --pairs 20000 --skip-dashboard
    .venv/bin/python -m benchmarks.bench_analysis --three-runs       # also 3 runs at once
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CACHE = REPO / ".bench-cache"
CHROMIUM = Path(os.environ.get("VITSWEEP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = (("", "Runs"), ("pairs", "Pairs"), ("distributions", "Distributions"), ("models", "Models"),
         ("sql", "SQL"))
FIXTURE_VERSION = 2  # bump when make_scale_run changes, so a stale cached run is rebuilt


def build_run(pairs: int, pairs_per_unit: int, copy: int = 0) -> Path:
    """The cached scale run for this size (built now when missing); copy 1, 2, … are further
    runs of the same size with their own run_id and seed (for the several-runs figures)."""
    from tests.support.runs import SCALE_RUN_ID, make_scale_run

    folder = CACHE / f"v{FIXTURE_VERSION}-pairs-{pairs}-unit-{pairs_per_unit}" / f"copy-{copy}"
    run_id = SCALE_RUN_ID if copy == 0 else f"{SCALE_RUN_ID}-{copy + 1}"
    run = folder / run_id
    marker = folder / "complete"
    if marker.exists():
        return run
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    print(f"building the scale run ({pairs:,} pairs per probe) under {folder} ...", flush=True)
    make_scale_run(folder, pairs=pairs, pairs_per_unit=pairs_per_unit, run_id=run_id, seed=copy)
    marker.write_text("ok\n")
    print(f"  built in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def describe(run: Path) -> dict[str, float]:
    import duckdb

    files = sorted(str(p) for p in (run / "results").rglob("*.parquet"))
    size = sum(Path(f).stat().st_size for f in files)
    con = duckdb.connect()
    counts = {}
    for table in ("match", "perturb", "lipschitz", "pairs", "units", "images"):
        glob = str(run / "results" / table / "*" / "*" / "*.parquet")
        counts[table] = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
    con.close()
    return {"files": len(files), "mb": size / 1e6, **counts}


def baseline_s(run: Path, repeats: int = 3) -> tuple[float, float]:
    """(wall s, CPU s) of a plain DuckDB count over every Parquet file of the run (best of
    `repeats`; CPU time counts every thread of this process)."""
    import duckdb

    files = sorted(str(p) for p in (run / "results").rglob("*.parquet"))
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        con = duckdb.connect()
        con.execute("SELECT count(*) FROM read_parquet($1, union_by_name = true)", [files]).fetchone()
        con.close()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


def _vitsweep() -> list[str]:
    return [sys.executable, "-m", "sweep.cli"]


def timed_process(args: list[str]) -> tuple[float, float, int, str, float]:
    """(wall seconds, peak RSS in MiB, exit status, stderr tail, CPU seconds) of one child
    process. CPU seconds (user + system, every thread) hardly change with the load others put
    on a shared machine; wall seconds do."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (wall, usage.ru_maxrss / 1024, proc.returncode, err.strip()[-300:],
            usage.ru_utime + usage.ru_stime)


def bench_named(runs: list[Path], tmp: Path) -> list[tuple[str, float, float, int, str, float]]:
    from analysis.named import list_named

    out = []
    for query in list_named():
        target = tmp / f"{query.name}.csv"
        wall, rss, rc, err, cpu = timed_process([*_vitsweep(), "query", *map(str, runs), "--named",
                                                 query.name, "--format", "csv", "--output", str(target)])
        out.append((query.name, wall, rss, rc, err, cpu))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_rendered(page: object, heading: str, timeout_ms: int) -> None:
    page.get_by_role("heading", name=heading, level=1).wait_for(  # type: ignore[attr-defined]
        state="visible", timeout=timeout_ms)
    page.wait_for_function(  # type: ignore[attr-defined]
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
            if (document.querySelector('[data-testid="stSkeleton"]')) return false;
            for (const c of document.querySelectorAll('.vega-embed'))
                if (!c.querySelector('canvas, svg')) return false;
            return Array.from(document.images).every(img => img.complete);
        }""",
        timeout=timeout_ms, polling=50,
    )


def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the dashboard process and its descendants (the Streamlit
    server) have used, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, cpu seconds)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family, total = {pid}, 0.0
    changed = True
    while changed:
        changed = False
        for child, (parent, _) in stats.items():
            if parent in family and child not in family:
                family.add(child)
                changed = True
    for member in family:
        total += stats.get(member, (0, 0.0))[1]
    return total


def _visit(page: object, url: str, heading: str, timeout_s: float, pid: int,
           click: bool) -> tuple[float, float, int]:
    """(seconds until `heading`'s page has rendered, server CPU seconds meanwhile, error boxes):
    by following its link in the sidebar (the same browser session) or by loading its URL."""
    start, cpu = time.perf_counter(), _server_cpu(pid)
    if click:
        page.locator('[data-testid="stSidebarNavLink"]', has_text=heading).first.click()  # type: ignore[attr-defined]
    else:
        page.goto(url, wait_until="domcontentloaded")  # type: ignore[attr-defined]
    _wait_rendered(page, heading, int(timeout_s * 1000))
    seconds, used = time.perf_counter() - start, _server_cpu(pid) - cpu
    errors = page.locator('[data-testid="stException"], '  # type: ignore[attr-defined]
                          '[data-testid="stAlertContentError"]').count()
    return seconds, used, errors


def bench_dashboard(run: Path, timeout_s: float) -> list[dict[str, object]]:
    """For every page: its first visit (a new browser session, the server's caches cold for
    it), a return to it in the same browser session by its sidebar link (the issue's "second
    visit (cached)": what a user does), and a reload in a new browser session (Streamlit boots
    the page in the browser again); each with the server's CPU seconds meanwhile."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    proc = subprocess.Popen([*_vitsweep(), "dashboard", str(run), "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, dict[str, object]] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.3)
        with sync_playwright() as pw:
            chrome = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                # warm the browser itself (first context start-up is not the app's time)
                ctx = chrome.new_context()
                ctx.new_page().goto("about:blank")
                ctx.close()
                for path, heading in PAGES:  # first visit, then a reload in a new session
                    row: dict[str, object] = {"page": heading}
                    for kind in ("first", "reload"):
                        ctx = chrome.new_context(viewport={"width": 1440, "height": 1000})
                        seconds, cpu, errors = _visit(ctx.new_page(), f"{url}/{path}", heading,
                                                      timeout_s, proc.pid, click=False)
                        row.update({f"{kind}_s": seconds, f"{kind}_cpu_s": cpu,
                                    "error_boxes": max(errors, int(row.get("error_boxes", 0)))})  # type: ignore[arg-type]
                        ctx.close()
                    out[heading] = row
                # one browser session: start on the last page, then follow each page's sidebar link
                ctx = chrome.new_context(viewport={"width": 1440, "height": 1000})
                page = ctx.new_page()
                last_path, last_heading = PAGES[-1]
                _visit(page, f"{url}/{last_path}", last_heading, timeout_s, proc.pid, click=False)
                for _, heading in PAGES:
                    seconds, cpu, errors = _visit(page, url, heading, timeout_s, proc.pid, click=True)
                    out[heading].update({"return_s": seconds, "return_cpu_s": cpu,
                                         "error_boxes": max(errors, int(out[heading]["error_boxes"]))})  # type: ignore[arg-type]
                ctx.close()
                for row in out.values():
                    print(f"  {row['page']:<14} first {row['first_s']:6.2f} s (server CPU {row['first_cpu_s']:5.2f} s)"
                          f"   return {row['return_s']:6.2f} s ({row['return_cpu_s']:5.2f} s)"
                          f"   reload {row['reload_s']:6.2f} s ({row['reload_cpu_s']:5.2f} s)"
                          f"{'   ERROR BOX' if row['error_boxes'] else ''}", flush=True)
            finally:
                chrome.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    return list(out.values())


GOALS = {"named_s": 2.0, "named_rss_mib": 1024.0, "report_s": 15.0, "first_s": 3.0, "return_s": 1.0}


def goal_table(figures: dict[str, object]) -> str:
    """The issue's goals against this run's figures (wall seconds; CPU seconds beside them)."""
    rows = ["| what | wall | CPU | goal | met |", "| --- | --- | --- | --- | --- |"]
    named = figures.get("named") or []
    if named:
        walls = [float(q["s"]) for q in named]  # type: ignore[index]
        cpus = [float(q["cpu_s"]) for q in named]  # type: ignore[index]
        missed = [f"`{q['name']}` {float(q['s']):.2f} s" for q in named  # type: ignore[index]
                  if float(q["s"]) > GOALS["named_s"] or q["rc"] != 0]  # type: ignore[index]
        rows.append(f"| named queries ({len(named)}) | {min(walls):.2f}–{max(walls):.2f} s | "
                    f"{min(cpus):.2f}–{max(cpus):.2f} s | ≤ {GOALS['named_s']:g} s each | "
                    f"{len(named) - len(missed)} of {len(named)}"
                    + (f"; not {', '.join(missed)}" if missed else "") + " |")
        rss = max(float(q["rss_mib"]) for q in named)  # type: ignore[index]
        rows.append(f"| peak memory, any named query | {rss:.0f} MiB | | ≤ 1 GiB | "
                    f"{'yes' if rss <= GOALS['named_rss_mib'] else 'no'} |")
    report = figures.get("report")
    if isinstance(report, dict):
        ok = report["s"] <= GOALS["report_s"] and report["rc"] == 0
        rows.append(f"| `vitsweep report` | {report['s']:.2f} s | {report['cpu_s']:.2f} s | "
                    f"≤ {GOALS['report_s']:g} s | {'yes' if ok else 'no'} |")
    for p in figures.get("pages") or []:  # type: ignore[union-attr]
        first_ok = p["first_s"] <= GOALS["first_s"] and not p["error_boxes"]
        return_ok = p["return_s"] <= GOALS["return_s"] and not p["error_boxes"]
        rows.append(f"| {p['page']} page, first visit / return in the session | "
                    f"{p['first_s']:.2f} / {p['return_s']:.2f} s | server {p['first_cpu_s']:.2f} / "
                    f"{p['return_cpu_s']:.2f} s | ≤ 3 / ≤ 1 s | {'yes' if first_ok else 'no'} / "
                    f"{'yes' if return_ok else 'no'} |")
    for p in figures.get("pages") or []:  # type: ignore[union-attr]
        rows.append(f"| {p['page']} page, reload in a new browser session | {p['reload_s']:.2f} s | "
                    f"server {p['reload_cpu_s']:.2f} s | (no goal) | |")
    return "\n".join(rows)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=75_000, help="pairs per probe (default 75,000)")
    parser.add_argument("--pairs-per-unit", type=int, default=500, help="pairs per work unit")
    parser.add_argument("--quick", action="store_true", help="3,000 pairs, 100 per unit")
    parser.add_argument("--skip-dashboard", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--skip-named", action="store_true")
    parser.add_argument("--page-timeout", type=float, default=180.0, help="seconds per page visit")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--three-runs", action="store_true",
                        help="also time the named queries and the report over three runs at once")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.pairs_per_unit = 3_000, 100

    started = time.perf_counter()
    run = build_run(args.pairs, args.pairs_per_unit)
    info = describe(run)
    base, base_cpu = baseline_s(run)
    print(f"run: {run}\n  {info['files']:,} Parquet files, {info['mb']:.0f} MB; rows: "
          + ", ".join(f"{t} {int(info[t]):,}" for t in ("match", "perturb", "lipschitz", "pairs",
                                                       "units", "images")))
    print(f"baseline: plain DuckDB read_parquet count of every file: {base:.3f} s "
          f"(CPU {base_cpu:.3f} s)\n", flush=True)
    print(f"load average before: {_load()}", flush=True)
    figures: dict[str, object] = {"run": info, "baseline_s": base, "baseline_cpu_s": base_cpu,
                                  "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp_dir:
        tmp = Path(tmp_dir)
        if not args.skip_named:
            print("named queries (`vitsweep query RUN --named NAME --format csv -o FILE`):")
            named = bench_named([run], tmp)
            for name, wall, rss, rc, err, cpu in named:
                status = "" if rc == 0 else f"   EXIT {rc}: {err}"
                print(f"  {name:<24} {wall:6.2f} s  ({wall / base:6.1f}x baseline)  CPU {cpu:6.2f} s  "
                      f"peak RSS {rss:7.0f} MiB{status}", flush=True)
            figures["named"] = [{"name": n, "s": w, "rss_mib": r, "rc": c, "cpu_s": u}
                                for n, w, r, c, _, u in named]
        if not args.skip_report:
            wall, rss, rc, err, cpu = timed_process([*_vitsweep(), "report", str(run), "--out",
                                                     str(tmp / "report")])
            print(f"\nvitsweep report: {wall:.2f} s ({wall / base:.1f}x baseline), CPU {cpu:.2f} s, "
                  f"peak RSS {rss:.0f} MiB" + ("" if rc == 0 else f"  EXIT {rc}: {err}"), flush=True)
            figures["report"] = {"s": wall, "rss_mib": rss, "rc": rc, "cpu_s": cpu}
        if args.three_runs:
            runs = [run] + [build_run(args.pairs, args.pairs_per_unit, copy) for copy in (1, 2)]
            print("\nthree runs at once (3x the rows; time per run in brackets):")
            three = bench_named(runs, tmp)
            for name, wall, rss, rc, err, cpu in three:
                status = "" if rc == 0 else f"   EXIT {rc}: {err}"
                print(f"  {name:<24} {wall:6.2f} s  ({wall / 3:5.2f} s per run)  CPU {cpu:6.2f} s  "
                      f"peak RSS {rss:7.0f} MiB{status}", flush=True)
            wall, rss, rc, err, cpu = timed_process([*_vitsweep(), "report", *map(str, runs), "--out",
                                                     str(tmp / "report3")])
            print(f"  vitsweep report (3 runs): {wall:.2f} s ({wall / 3:.2f} s per run), CPU {cpu:.2f} s, "
                  f"peak RSS {rss:.0f} MiB" + ("" if rc == 0 else f"  EXIT {rc}: {err}"), flush=True)
            figures["three_runs"] = {"named": [{"name": n, "s": w, "rss_mib": r, "rc": c, "cpu_s": u}
                                               for n, w, r, c, _, u in three],
                                     "report": {"s": wall, "rss_mib": rss, "rc": rc, "cpu_s": cpu}}
    if not args.skip_dashboard:
        print("\ndashboard pages (headless Chromium): first visit (new browser session), return to it "
              "in the same session by its sidebar link, reload in a new browser session:")
        figures["pages"] = bench_dashboard(run, args.page_timeout)
    figures["load_after"] = os.getloadavg()[0]
    figures["seconds"] = time.perf_counter() - started
    print(f"\nload average after: {_load()} (the machine has {os.cpu_count()} cores); "
          f"benchmark took {figures['seconds']:.0f} s\n")
    print(goal_table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
