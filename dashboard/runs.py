"""Which run directories the dashboard shows, and what state each is in (no Streamlit here).

The run directories come from, in this order: `st.session_state["runs"]` (set by tests or the
sidebar), the environment variable VITSWEEP_RUNS (os.pathsep-separated; `vitsweep dashboard`
sets it), and the script's argv after `--` (`streamlit run dashboard/app.py -- RUN...`).
"""

from __future__ import annotations

import json
import os
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

    path: Path
    state: RunState
    message: str
    n_files: int = 0

    @property
    def browsable(self) -> bool:
        """Has result files to query (a partial run is browsable: it shows what is there)."""
        return self.state in ("partial", "complete")


def resolve_run_dirs(session: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None) -> list[Path]:
    """The run directories to show (see the module docstring for where they come from)."""
    if session is not None and session.get("runs"):
        runs = session["runs"]
        return [Path(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]
    env = os.environ.get(RUNS_ENV, "").strip()
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p.strip()]
    args = list(sys.argv[1:] if argv is None else argv)
    return [Path(a) for a in args if a and not a.startswith("-")]


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


def run_status(path: Path) -> RunStatus:
    """Classify a run directory: missing, not a directory, empty, still being written, complete."""
    if not path.exists():
        return RunStatus(path, "missing", f"Run directory {path} does not exist.")
    if not path.is_dir():
        return RunStatus(path, "not_a_dir", f"{path} is a file, not a run directory.")
    n_files = count_result_files(path)
    progress = _read_progress(path) or {}
    state = progress.get("state")
    if n_files == 0:
        if state == "running":
            msg = f"Run {path.name} has started but no unit has finished yet: results appear as units finish."
        else:
            msg = f"Run {path.name} has no results yet (no Parquet files under {path / 'results'})."
        return RunStatus(path, "empty", msg)
    finished = progress.get("state") == "finished" and (path / "manifest.json").is_file()
    if not finished:
        done, total = progress.get("units_done"), progress.get("units_total")
        counts = f" ({done} of {total} units done)" if done is not None and total else ""
        word = state if state in ("running", "interrupted", "failed") else "not finished"
        msg = (
            f"Run {path.name} is still being written or incomplete (state: {word}){counts}: "
            "showing the results written so far; the pages refresh every few seconds."
        )
        return RunStatus(path, "partial", msg, n_files)
    return RunStatus(path, "complete", f"Run {path.name}: finished.", n_files)
