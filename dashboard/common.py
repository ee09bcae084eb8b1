"""Streamlit helpers shared by the pages: which runs to show, and the run-state messages.

Every page starts with `runs = common.page("Title")`: it draws the heading, says which runs are
missing, empty or still being written (st.warning / st.info, never a traceback) and stops the
page when nothing is left to query.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data
from dashboard.runs import RunStatus, resolve_run_dirs

Runs = tuple[str, ...]


def all_runs() -> Runs:
    """Every run directory given to the app, as strings (missing ones included)."""
    return tuple(str(p) for p in resolve_run_dirs(st.session_state))


def show_status(status: RunStatus) -> None:
    """One message for a run that is not simply complete."""
    if status.state in ("missing", "not_a_dir"):
        st.warning(status.message, icon=":material/folder_off:")
    elif status.state in ("empty", "partial"):
        st.info(status.message, icon=":material/hourglass_top:")


def page(title: str, caption: str = "", *, stop_if_empty: bool = True) -> Runs:
    """Draw the page heading and run messages; return the runs that have results to query.

    With `stop_if_empty` (the default) the page stops here when no run has results.
    """
    st.title(title)
    if caption:
        st.caption(caption)
    runs = all_runs()
    if not runs:
        st.warning(
            "No run directory given. Start the dashboard with `vitsweep dashboard RUN [RUN...]`.",
            icon=":material/folder_off:",
        )
        st.stop()
    statuses = data.statuses(runs)
    for status in statuses:
        show_status(status)
    browsable = tuple(str(s.path) for s in statuses if s.browsable)
    if not browsable and stop_if_empty:
        st.info("Nothing to show yet: no run has result files.", icon=":material/info:")
        st.stop()
    return browsable


def run_label(run: str) -> str:
    return Path(run).name or run
