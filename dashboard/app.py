"""The vitsweep dashboard: `vitsweep dashboard RUN [RUN...]` (or `streamlit run dashboard/app.py
-- RUN...`). This file only wires the pages (one file each under dashboard/views/) with
st.navigation; every read goes through dashboard/data.py, which calls analysis/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts dashboard/ on sys.path, not the repository root: make `dashboard.*`,
# `analysis.*` and `sweep.*` importable when the package is not installed.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from analysis.db import RunNotFound  # noqa: E402
from dashboard import common  # noqa: E402

PAGES_DIR = Path(__file__).resolve().parent / "views"  # not pages/: Streamlit auto-registers that folder, and deep links would skip this file

st.set_page_config(page_title="vitsweep", page_icon=":material/grid_view:", layout="wide")

pages = [
    st.Page(PAGES_DIR / "runs.py", title="Runs", icon=":material/monitoring:", default=True),
    st.Page(PAGES_DIR / "pairs.py", title="Pairs", icon=":material/compare:"),
    st.Page(PAGES_DIR / "distributions.py", title="Distributions", icon=":material/bar_chart:"),
    st.Page(PAGES_DIR / "models.py", title="Models", icon=":material/view_column:"),
    st.Page(PAGES_DIR / "transfer.py", title="Transfer", icon=":material/swap_horiz:"),
    st.Page(PAGES_DIR / "sql.py", title="SQL", icon=":material/terminal:"),
]
current = st.navigation(pages)

with st.sidebar:
    st.caption("Runs")
    for run in common.all_runs() or ("(none given)",):
        st.text(common.run_label(run))

try:
    current.run()
except RunNotFound as err:  # a run directory removed while the app was showing it
    st.warning(f"{err}. Was the run moved or deleted? Restart the dashboard with the new path.")
