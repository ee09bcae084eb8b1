"""Which run directories the dashboard shows, and what state each is in (no Streamlit here).

The run directories come from, in this order: `st.session_state["runs"]` (set by tests or the
sidebar), the environment variable VITSWEEP_RUNS (os.pathsep-separated; `vitsweep dashboard`
sets it), and the script's argv after `--` (`streamlit run dashboard/app.py -- RUN...`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RUNS_ENV = "VITSWEEP_RUNS"

RunState = Literal["missing", "not_a_dir", "empty", "partial", "complete"]


@dataclass(frozen=True)
class RunStatus:
    """A run directory's state as the dashboard sees it, with a one-line message for users."""

    path: Path  # a URI string for a run in object storage
    state: RunState
    message: str
    n_files: int = 0

    @property
    def browsable(self) -> bool:
        """Has result files to query (a partial run is browsable: it shows what is there)."""
        return self.state in ("partial", "complete")


_URL = re.compile(r"^([a-z][a-z0-9+.-]*):/+(?=[^/])", re.IGNORECASE)


def run_path(run: str | Path) -> Path | str:
    """A run as the dashboard keeps it: a local folder as a Path, a run in object storage
    (`s3://bucket/prefix`) as its URI string (also when a Path has folded `s3://` to `s3:/`)."""
    text = str(run)
    match = _URL.match(text)
    if match is None or match.group(1).lower() == "file":
        return Path(text)
    return f"{match.group(1)}://{text[match.end():]}".rstrip("/")


def _split_runs(text: str) -> list[str]:
    """VITSWEEP_RUNS split at os.pathsep, where the `:` of a URI (`s3://bucket/run`) does not split."""
    parts = text.split(os.pathsep)
    out: list[str] = []
    for part in parts:
        if out and part.startswith("//") and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", out[-1]):
            out[-1] = f"{out[-1]}:{part}"  # a scheme and its //...: one URI
        else:
            out.append(part)
    return out


def resolve_run_dirs(session: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None) -> list[Path | str]:
    """The run directories to show (see the module docstring for where they come from): Paths,
    and URI strings for runs in object storage."""
    if session is not None and session.get("runs"):
        runs = session["runs"]
        return [run_path(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]
    env = os.environ.get(RUNS_ENV, "").strip()
    if env:
        return [run_path(p) for p in _split_runs(env) if p.strip()]
    args = list(sys.argv[1:] if argv is None else argv)
    return [run_path(a) for a in args if a and not a.startswith("-")]


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def count_result_files(path: Path) -> int:
    """Finished Parquet files under results/ (temporary files do not end in .parquet)."""
    results = path / "results"
    if not results.is_dir():
        return 0
    return sum(1 for _ in results.rglob("*.parquet"))


def _remote_status(url: str) -> RunStatus:
    """run_status of a run in object storage, read as query and report read it (analysis.rundirs)."""
    from analysis.rundirs import RunNotFound, check_runs, file_listing, read_manifest, read_progress
    from sweep.errors import as_user_error

    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    try:
        check_runs([url])
        n_files = len(file_listing([url]))
        progress = read_progress(url) or {}
        has_manifest = read_manifest(url) is not None
    except RunNotFound as err:
        return RunStatus(url, "missing", f"{err}.")  # type: ignore[arg-type]
    except Exception as err:  # no credentials, an endpoint that does not answer, ...
        user = as_user_error(err)
        if user is None:
            raise
        return RunStatus(url, "missing", f"Cannot read run {url}: {user}")  # type: ignore[arg-type]
    return _classify(url, name, n_files, progress, has_manifest, f"{url}/results")  # type: ignore[arg-type]


def run_status(path: Path | str) -> RunStatus:
    """Classify a run directory: missing, not a directory, empty, still being written, complete.
    A run in object storage (`s3://...`) is read through fsspec, as `vitsweep query` reads it."""
    run = run_path(path)
    if isinstance(run, str):
        return _remote_status(run)
    path = run
    if not path.exists():
        return RunStatus(path, "missing", f"Run directory {path} does not exist.")
    if not path.is_dir():
        return RunStatus(path, "not_a_dir", f"{path} is a file, not a run directory.")
    return _classify(path, path.name, count_result_files(path), _read_progress(path) or {},
                     (path / "manifest.json").is_file(), path / "results")


def _classify(path: Path, name: str, n_files: int, progress: dict[str, Any], has_manifest: bool,
              results: Path | str) -> RunStatus:
    state = progress.get("state")
    if n_files == 0:
        if state == "running":
            msg = f"Run {name} has started but no unit has finished yet: results appear as units finish."
        else:
            msg = f"Run {name} has no results yet (no Parquet files under {results})."
        return RunStatus(path, "empty", msg)
    finished = progress.get("state") == "finished" and has_manifest
    if not finished:
        done, total = progress.get("units_done"), progress.get("units_total")
        counts = f" ({done} of {total} units done)" if done is not None and total else ""
        word = state if state in ("running", "interrupted", "failed") else "not finished"
        msg = (
            f"Run {name} is still being written or incomplete (state: {word}){counts}: "
            "showing the results written so far; the pages refresh every few seconds."
        )
        return RunStatus(path, "partial", msg, n_files)
    return RunStatus(path, "complete", f"Run {name}: finished.", n_files)
