"""What `vitsweep dashboard` runs: `python -m dashboard.serve run dashboard/app.py [options]`.

It imports the libraries every page reads with (DuckDB, pandas, pyarrow, Altair, and analysis/,
which imports them; analysis.claims brings scipy.stats, 0.7 s of CPU on its own, which the
Models page's verdicts need) and then hands over to Streamlit's own command line, exactly as `python -m
streamlit` would. Streamlit runs the app in this same process, so the first visitor no longer
waits for those imports (about 1.4 s of the Models page's first visit on a 2-core machine); the server starts
that much later instead, before it answers its health check.
"""

from __future__ import annotations

import sys

import altair  # noqa: F401
import duckdb  # noqa: F401  (imported for the app, see above)
import pandas  # noqa: F401
import pyarrow  # noqa: F401
from streamlit.web import cli

import analysis.claims  # noqa: F401
import analysis.db  # noqa: F401
import analysis.glance  # noqa: F401
import analysis.named  # noqa: F401


def main() -> int:
    sys.argv = ["streamlit", *sys.argv[1:]]
    return int(cli.main(prog_name="streamlit") or 0)


if __name__ == "__main__":
    raise SystemExit(main())
