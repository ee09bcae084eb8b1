"""`vitsweep dashboard RUN [RUN...]`: browse runs in the Streamlit app (dashboard/app.py).

Starts `python -m dashboard.serve run dashboard/app.py` (Streamlit's `streamlit run`, with the
app's libraries imported first: dashboard/serve.py) headless, bound to 127.0.0.1 unless `--host`
says otherwise, prints the address and waits until Streamlit exits. Ctrl-C or SIGTERM stops it
and Streamlit with it, exit status 0 (a stopped server is the normal end, unlike `vitsweep run`'s
130). The run directories are passed after `--` (the app reads them from its argv) and in the
environment variable VITSWEEP_RUNS. Never imports torch: this command must start fast on a laptop.

    vitsweep dashboard demo-run                        # http://localhost:8501
    vitsweep dashboard runs/a runs/b --port 8600       # two runs side by side
    vitsweep dashboard demo-run --host 0.0.0.0         # reachable from other machines

Each RUN must be a run folder (spec.yaml, manifest.json, progress.json or results/), as for
`query` and `report`; the address is tried before anything is printed, so a port in use or an
address this machine does not have is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from sweep.errors import UserError

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
RUNS_ENV = "VITSWEEP_RUNS"  # os.pathsep-separated run directories (read by dashboard/runs.py)
RUN_MARKERS = ("spec.yaml", "manifest.json", "progress.json", "results")  # what query and report accept


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or URIs, s3://bucket/prefix) to browse")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )


def streamlit_command(runs: list[Path | str], host: str, port: int) -> list[str]:
    """The exact `streamlit run` command line for these runs (through dashboard/serve.py, which
    imports DuckDB, pandas and pyarrow before Streamlit starts, then runs Streamlit's own CLI)."""
    return [
        sys.executable, "-m", "dashboard.serve", "run", str(APP),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
        # no watching of source files for edits (a development aid): Streamlit's watchers poll
        # every module the app imported, costing seconds of CPU a minute on a busy machine
        "--server.fileWatcherType", "none",
        # no full garbage collection after every script run: with pandas, pyarrow, scipy and
        # Altair loaded it took about 0.4 s of every page visit (Python's own GC still runs)
        "--runner.postScriptGC", "false",
        "--browser.gatherUsageStats", "false",
        "--", *[str(r) for r in runs],
    ]  # fmt: skip


def check_runs(runs: list[str]) -> list[Path | str]:
    """Resolve the run directories; a missing one (or a file) is a UserError. A run in object
    storage (`s3://bucket/prefix`) is checked as query and report check it and kept as its URI."""
    resolved: list[Path | str] = []
    for run in runs:
        if "://" in run and not run.startswith("file://"):
            from analysis.rundirs import RunNotFound
            from analysis.rundirs import check_runs as check_remote

            try:
                (url,) = check_remote([run])
            except RunNotFound as err:
                raise UserError(str(err)) from None
            resolved.append(str(url))
            continue
        path = Path(run).expanduser()
        if not path.exists():
            raise UserError(f"{run}: no such run directory")
        if not path.is_dir():
            raise UserError(f"{run}: not a directory (a run is a folder with spec.yaml and results/)")
        if not any((path / marker).exists() for marker in RUN_MARKERS):
            raise UserError(f"{run}: not a vitsweep run (no spec.yaml, manifest.json, progress.json or results/)")
        resolved.append(path.resolve())
    from analysis.rundirs import RunNotFound
    from analysis.rundirs import check_runs as check_all

    try:
        check_all(resolved)  # a copy of another run given (same run_id): its rows would count twice
    except RunNotFound as err:
        raise UserError(str(err)) from None
    return resolved


def check_address(host: str, port: int) -> None:
    """Bind host:port once, as Streamlit will (SO_REUSEADDR, like its server), and let it go:
    a port in use or an address that is not this machine's is a UserError, before any output."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UserError(f"--host {host}: unknown host ({err.strerror})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as err:
                reason = err.strerror or str(err)
                raise UserError(f"cannot serve on {host}:{port}: {reason}") from None


def run(args: argparse.Namespace) -> int:
    runs = check_runs(args.runs)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: not a port number (1-65535)")
    if not APP.is_file():
        raise UserError(f"{APP}: the dashboard app is missing from this installation")
    check_address(args.host, args.port)
    shown_host = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"vitsweep dashboard: http://{shown_host}:{args.port}  ({len(runs)} run(s); Ctrl-C stops)")
    sys.stdout.flush()
    env = dict(os.environ, **{RUNS_ENV: os.pathsep.join(str(r) for r in runs)})
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    # cwd = dashboard/, so Streamlit also reads dashboard/.streamlit/config.toml (run paths are absolute)
    proc = subprocess.Popen(streamlit_command(runs, args.host, args.port), env=env, cwd=APP.parent)
    return serve(proc)


class _Terminate(Exception):
    """SIGTERM arrived: stop Streamlit before exiting."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminate


def serve(proc: subprocess.Popen[bytes], stop_timeout_s: float = 10.0) -> int:
    """Wait for Streamlit; on Ctrl-C or SIGTERM stop it (never leave it running) and return 0."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Terminate) as stop:
        # Ctrl-C in a terminal reaches Streamlit too; a SIGTERM to this process alone does not.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
