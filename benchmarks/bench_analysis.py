"""Analysis at scale: named queries, `vitsweep report` and every dashboard page on a large run.

Builds (once; cached under .bench-cache/ in the repository, which git ignores) a synthetic run the
size of one ImageNet-val sweep with the engine's own writer and schemas (tests/runfixture.py,
`make_scale_run`: 3 models x match, perturb and lipschitz, two settings per probe, errors, failed
units, galleries), then measures, in this one process:

    baseline    a plain DuckDB `SELECT count(*) FROM read_parquet([...every file...])`, in process
    named       every named query through `vitsweep query RUN --named NAME` (a fresh process each:
                wall time and the process's peak RSS, from os.wait4)
    report      `vitsweep report RUN --out DIR` (wall time, peak RSS)
    dashboard   `vitsweep dashboard RUN`, each page visited twice in headless Chromium (Playwright
                driving /usr/bin/chromium): first visit (cold caches) and second visit (a new
                browser context: Streamlit's caches are warm), until the page has rendered

and prints each figure with its ratio to the baseline, and CPU seconds (of the query or report
process, of the dashboard server during a visit): on a shared machine wall time follows the others'
load, CPU time much less.

    .venv/bin/python benchmarks/bench_analysis.py                  # the issue's size: 75,000 pairs
    .venv/bin/python benchmarks/bench_analysis.py --quick          # 3,000 pairs, for trying
    .venv/bin/python benchmarks/bench_analysis.py --pairs 20000 --skip-dashboard
    .venv/bin/python benchmarks/bench_analysis.py --three-runs       # also 3 runs at once
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

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
    from runfixture import SCALE_RUN_ID, make_scale_run

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


def bench_dashboard(run: Path, timeout_s: float) -> list[tuple[str, float, float, int, float, float]]:
    """(page, first visit s, second visit s, error boxes, server CPU s of the first visit, of
    the second) for every page."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    proc = subprocess.Popen([*_vitsweep(), "dashboard", str(run), "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    out = []
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
                for path, heading in PAGES:
                    times, cpus = [], []
                    errors = 0
                    for _ in range(2):
                        ctx = chrome.new_context(viewport={"width": 1440, "height": 1000})
                        page = ctx.new_page()
                        start, cpu = time.perf_counter(), _server_cpu(proc.pid)
                        page.goto(f"{url}/{path}", wait_until="domcontentloaded")
                        _wait_rendered(page, heading, int(timeout_s * 1000))
                        times.append(time.perf_counter() - start)
                        cpus.append(_server_cpu(proc.pid) - cpu)
                        errors = page.locator('[data-testid="stException"], '
                                              '[data-testid="stAlertContentError"]').count()
                        ctx.close()
                    out.append((heading, times[0], times[1], errors, cpus[0], cpus[1]))
                    print(f"  {heading:<14} first {times[0]:6.2f} s (server CPU {cpus[0]:5.2f} s)   "
                          f"second {times[1]:6.2f} s (server CPU {cpus[1]:5.2f} s)"
                          f"{'   ERROR BOX' if errors else ''}", flush=True)
            finally:
                chrome.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    return out


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

    run = build_run(args.pairs, args.pairs_per_unit)
    info = describe(run)
    base, base_cpu = baseline_s(run)
    print(f"run: {run}\n  {info['files']:,} Parquet files, {info['mb']:.0f} MB; rows: "
          + ", ".join(f"{t} {int(info[t]):,}" for t in ("match", "perturb", "lipschitz", "pairs",
                                                       "units", "images")))
    print(f"baseline: plain DuckDB read_parquet count of every file: {base:.3f} s "
          f"(CPU {base_cpu:.3f} s)\n", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
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
        print("\ndashboard pages (headless Chromium; second visit = new browser session):")
        pages = bench_dashboard(run, args.page_timeout)
        figures["pages"] = [{"page": p, "first_s": a, "second_s": b, "error_boxes": e,
                             "first_cpu_s": c1, "second_cpu_s": c2} for p, a, b, e, c1, c2 in pages]
    figures["load_after"] = os.getloadavg()[0]
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
