"""Every read the dashboard makes: cached functions over analysis/ (pages never touch SQL).

Runs are passed as a tuple of path strings. Every cached result is keyed on the runs' file
listing (`analysis.db.file_listing`: names, sizes and mtimes of the Parquet files, hashed to a
short `key`): a finished run is read once and then served from the cache, while a running
sweep's new files change the key, so they show up on the next refresh. The listing itself is
taken at most once a second. The DuckDB connection (with the `analysis.db.Limits` every analysis
connection uses) is cached on the same key. Queries run on a fresh cursor under a lock:
Streamlit serves sessions from several threads, and one DuckDB connection object must not be used
by two at once; every query has a time limit (`QUERY_TIMEOUT_S`; the SQL console's is
`SQL_TIMEOUT_S`), so no query holds the lock for long.

Pages get only what they draw: histograms, ECDF points, box-plot summaries and medians are
computed in DuckDB (`histogram`-style binning, `quantile_cont`), tables of pairs are sorted and
paged in SQL. The SQL is analysis's: every statement is a file in analysis/queries/dashboard/
(`analysis.named.statement`), chosen per probe or per estimate from fixed mappings (no switch
on a probe's name), with bound parameters. The one text composed here is the Pairs table's sort
order (`pairs_page`: column names checked against SORTABLE), given to DuckDB's relation API.

A probe run with several settings (config_hash) is never pooled: per-series reads group by
model, weights, embedding point and config_hash, and carry the setting's text (the `settings`
view of analysis.db).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
import streamlit as st

from analysis import db, guard
from analysis.named import statement
from dashboard.formatting import series_labels
from dashboard.runs import RunStatus, run_status
from sweep.schema import RESULT_TABLES

TTL_S = 5  # run files that are not Parquet (progress.json, spec, manifest)
CACHE_TTL_S = 3600  # results: keyed on the file listing, so only memory bounds them
CACHE_ENTRIES = 64
LISTING_TTL_S = 1.0
QUERY_TIMEOUT_S = 60.0
SQL_TIMEOUT_S = float(os.environ.get("VITSWEEP_SQL_TIMEOUT", "10"))
PAGE_SIZE = 100
MAX_LISTED = 1000  # rows of a listing the Runs page shows (failed units, error messages)
Runs = tuple[str, ...]
T = TypeVar("T")
_cached = st.cache_data(ttl=CACHE_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)


# ---------------------------------------------------------------- the cache key

_listings: dict[Runs, tuple[float, str, int]] = {}
_listings_lock = threading.Lock()


def _listing(runs: Runs) -> tuple[str, int]:
    """(key, number of files) of the runs' Parquet file listing, taken at most once a second."""
    now = time.monotonic()
    with _listings_lock:
        hit = _listings.get(runs)
        if hit and now - hit[0] < LISTING_TTL_S:
            return hit[1], hit[2]
    listing = db.file_listing(runs)
    key = hashlib.sha1(repr(listing).encode()).hexdigest()[:16]
    with _listings_lock:
        _listings[runs] = (now, key, len(listing))
    return key, len(listing)


def cache_key(runs: Runs) -> str:
    """A short hash of the runs' file listing (names, sizes, mtimes)."""
    return _listing(runs)[0]


@dataclass
class _Conn:
    con: duckdb.DuckDBPyConnection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def df(self, name: str, params: Mapping[str, Any] | None = None,
           timeout_s: float = QUERY_TIMEOUT_S,
           shape: Callable[[duckdb.DuckDBPyRelation], duckdb.DuckDBPyRelation] | None = None) -> pd.DataFrame:
        """Run the statement `name` (analysis/queries/<name>.sql) with bound `$name` parameters;
        `shape` may reorder, page or aggregate its relation before it runs."""
        with self.lock, db.time_limit(self.con, timeout_s) as cur:
            relation = cur.sql(statement(name), params=dict(params) if params else None)
            return (shape(relation) if shape else relation).df()


@st.cache_resource(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def _open(runs: Runs, key: str) -> _Conn:
    return _Conn(db.open_runs(list(runs), snapshot=True))  # re-opened when the listing changes


def _connection(runs: Runs) -> _Conn:
    return _open(runs, cache_key(runs))


# ---------------------------------------------------------------- run files (no DuckDB)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def statuses(runs: Runs) -> list[RunStatus]:
    return [run_status(Path(r)) for r in runs]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def progress(run: str) -> dict[str, Any] | None:
    return db.read_progress(run)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def spec_text(run: str) -> str | None:
    return db.read_spec_text(run)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def manifest(run: str) -> dict[str, Any] | None:
    return db.read_manifest(run)


def keyed(fn: Callable[..., T]) -> Callable[..., T]:
    """Cache `fn(runs, key, ...)` on the runs' file listing; callers write `fn(runs, ...)`."""
    cached = _cached(fn)

    @functools.wraps(fn)
    def call(runs: Runs, *args: Any, **kwargs: Any) -> T:
        return cached(runs, cache_key(runs), *args, **kwargs)

    return call


@st.cache_data(ttl=TTL_S, show_spinner=False)
def plan(run: str) -> dict[str, Any] | None:
    """RUN/plan.json (written by `vitsweep run` at its start), or None."""
    try:
        data = json.loads((Path(run) / "plan.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- Runs page


@keyed
def read_stats(runs: Runs, key: str) -> db.ReadStats:
    """Units, files and rows the runs hold, and how long counting them took (once per change
    of the file listing: the first count after a change reads every new file's footer)."""
    conn = _connection(runs)
    with conn.lock:
        return db.read_stats(conn.con, list(runs))


@keyed
def failed_units(runs: Runs, key: str) -> pd.DataFrame:
    """Units that failed after their retries, with their errors (the first MAX_LISTED)."""
    return _connection(runs).df("dashboard/failed_units", {"limit": MAX_LISTED})


@keyed
def pair_errors(runs: Runs, key: str) -> pd.DataFrame:
    """Pairs whose probe or decoding failed, counted by table, model and error message (the
    MAX_LISTED most frequent)."""
    return _connection(runs).df("dashboard/pair_errors", {"limit": MAX_LISTED})


@keyed
def row_counts(runs: Runs, key: str) -> pd.DataFrame:
    """Rows per result table and status."""
    return _connection(runs).df("dashboard/row_counts")


@keyed
def run_ids(runs: Runs, key: str) -> list[str]:
    """The run_id values in the results (a run's id, not its folder name)."""
    return _connection(runs).df("dashboard/run_ids")["run_id"].tolist()


# ---------------------------------------------------------------- Pairs page


@keyed
def probes_and_models(runs: Runs, key: str) -> dict[str, list[str]]:
    """{probe: [models with rows]} over the result tables that have rows."""
    df = _connection(runs).df("dashboard/probes_and_models")
    return {t: df.loc[df["probe"] == t, "model"].tolist() for t in RESULT_TABLES
            if (df["probe"] == t).any()}


PAIR_KEYS = ("model", "run_id", "unit_id", "pair_id")
_PAIRS = {probe: f"dashboard/pairs_{probe}" for probe in RESULT_TABLES}  # one row per pair
_PAIR_ROWS = {probe: f"dashboard/pair_rows_{probe}" for probe in RESULT_TABLES}  # a pair's rows
SORTABLE = {  # columns the Pairs table can be sorted by (besides its keys)
    "match": ("rel_dist", "psnr", "ssim", "steps", "cos"),
    "perturb": ("max_disp_over_pair", "n_eps"),
    "lipschitz": ("max_l_jvp", "min_l_jvp", "n_estimates"),
}


OUTCOMES = {  # the Pairs page's outcome filter per probe (ok rows split by success: match only)
    "match": ("all", "success", "failure", "error"),
    "perturb": ("all", "error"),
    "lipschitz": ("all", "error"),
}
PROBED_CAPTION = {"match": "matched", "perturb": "perturbed", "lipschitz": "perturbed"}  # adv_png


def _statement_of(statements: Mapping[str, str], probe: str) -> str:
    if probe not in statements:
        raise ValueError(f"unknown table {probe!r}")
    return statements[probe]


@keyed
def pairs_page(runs: Runs, key: str, probe: str, models: tuple[str, ...], outcome: str = "all",
               search: str = "", sort: str = "", descending: bool = False, page: int = 0,
               page_size: int = PAGE_SIZE) -> tuple[pd.DataFrame, int]:
    """(one page of pairs, how many pairs match) of `probe` for the chosen models: sorted by
    `sort` (a column of SORTABLE[probe]; default model, run, unit, pair) and paged in SQL.

    outcome: "all" | "success" | "failure" (ok rows that did not match; match only) | "error".
    """
    order = ", ".join(PAIR_KEYS)
    if sort:
        if sort not in SORTABLE.get(probe, ()):
            raise ValueError(f"cannot sort {probe} pairs by {sort!r}")
        order = f"{sort} {'DESC' if descending else 'ASC'} NULLS LAST, {order}"
    params = {"models": list(models), "search": search.strip().lower() or None, "outcome": outcome}
    name = _statement_of(_PAIRS, probe)
    conn = _connection(runs)
    total = int(conn.df(name, params, shape=lambda rel: rel.aggregate("count(*) AS n"))["n"].iloc[0])
    first = int(page) * int(page_size)
    rows = conn.df(name, params, shape=lambda rel: rel.order(order).limit(int(page_size), first))
    return rows, total


@keyed
def pair_rows(runs: Runs, key: str, probe: str, run_id: str, unit_id: str, pair_id: str) -> pd.DataFrame:
    """Every row (every column) of one pair in `probe`'s table."""
    return _connection(runs).df(_statement_of(_PAIR_ROWS, probe),
                                {"run_id": run_id, "unit_id": unit_id, "pair_id": pair_id})


@keyed
def pair_images(runs: Runs, key: str, probe: str, run_id: str, unit_id: str, pair_id: str) -> pd.DataFrame:
    """The gallery PNGs of one pair (variant, src_png, adv_png, tgt_png as bytes); empty if none."""
    df = _connection(runs).df("dashboard/pair_images", {"probe": probe, "run_id": run_id,
                                                         "unit_id": unit_id, "pair_id": pair_id})
    for col in ("src_png", "adv_png", "tgt_png"):  # DuckDB gives BLOBs as bytearray
        df[col] = df[col].map(lambda b: bytes(b) if b is not None else None)
    return df


@keyed
def pairs_with_images(runs: Runs, key: str, probe: str) -> pd.DataFrame:
    """(run_id, unit_id, pair_id, model) of pairs that have gallery images (a few per unit)."""
    return _connection(runs).df("dashboard/pairs_with_images", {"probe": probe})


# ---------------------------------------------------------------- Distributions page
#
# One series per (model, weights, embed, config_hash): a probe run with several settings is
# never pooled. `series` is the legend label (dashboard.formatting.series_labels: the model,
# and weights, embedding point and setting where they differ between the series). Every
# function returns what its chart draws, computed in DuckDB.

MATCH_METRICS = ("rel_dist", "psnr", "ssim")
HIST_BINS = 30
ECDF_POINTS = 101


def _with_series(df: pd.DataFrame) -> pd.DataFrame:
    df.insert(0, "series", series_labels(df))
    return df


@keyed
def match_histograms(runs: Runs, key: str, bins: int = HIST_BINS) -> pd.DataFrame:
    """Histogram bins of rel_dist, PSNR and SSIM of ok match rows, per series: columns series,
    model, weights, embed, setting, config_hash, metric, bin_start, bin_end, count. The bins of a
    metric are shared by its series (equal width between its finite minimum and maximum).
    One scan of the match rows."""
    return _with_series(_connection(runs).df("dashboard/match_histograms", {"bins": int(bins)}))


@keyed
def match_ecdf(runs: Runs, key: str, points: int = ECDF_POINTS) -> pd.DataFrame:
    """ECDF points of rel_dist, PSNR and SSIM per series (the quantiles at `points` evenly
    spaced fractions): columns series, …, metric, value, fraction. One scan of the match rows."""
    fractions = [i / (points - 1) for i in range(points)]
    return _with_series(_connection(runs).df("dashboard/match_ecdf", {"fractions": fractions}))


@keyed
def success_rates(runs: Runs, key: str) -> pd.DataFrame:
    """Success rate of ok match rows per series: columns series, …, n_ok, success_rate."""
    return _with_series(_connection(runs).df("dashboard/success_rates"))


@keyed
def displacement_curve(runs: Runs, key: str) -> pd.DataFrame:
    """Median disp_over_pair per (series, norm, ε), adversarial and random, in long format."""
    return _with_series(_connection(runs).df("dashboard/displacement_curve"))


_LIPSCHITZ_BOXES = {"l_jvp": "dashboard/lipschitz_boxes_l_jvp", "l_fd": "dashboard/lipschitz_boxes_l_fd"}


@keyed
def lipschitz_boxes(runs: Runs, key: str, value: str = "l_jvp", h: float | None = None) -> pd.DataFrame:
    """Box-plot summary of a Lipschitz estimate (l_jvp, or l_fd at step size `h`) per series and
    direction family, over ok rows with a positive value (the axis is logarithmic): columns
    series, …, family, n, min, q1, median, q3, max; and median_l_jvp, the median l_jvp of every
    ok row of that series, family and h (for the medians table). One scan of the rows at h."""
    if value not in _LIPSCHITZ_BOXES:
        raise ValueError(f"unknown Lipschitz estimate {value!r}")
    return _with_series(_connection(runs).df(_LIPSCHITZ_BOXES[value], {"h": h}))


def lipschitz_medians(runs: Runs, h: float | None = None) -> pd.DataFrame:
    """Median l_jvp per series and family (rows at step size `h`; all when None)."""
    boxes = lipschitz_boxes(runs, "l_jvp", h)
    return boxes[["series", "model", "weights", "embed", "setting", "config_hash", "family", "median_l_jvp"]]


@keyed
def lipschitz_steps(runs: Runs, key: str) -> list[float]:
    return _connection(runs).df("dashboard/lipschitz_steps")["h"].tolist()


# ---------------------------------------------------------------- Models page (named queries)


@dataclass(frozen=True)
class NamedInfo:
    """What the Models page needs to know of a named query."""

    name: str
    description: str
    notes: str
    params: tuple[tuple[str, str | None, str], ...]  # (name, default, help)


@st.cache_data(ttl=60, show_spinner=False)
def named_queries() -> list[NamedInfo]:
    """The named queries analysis/ offers (names may change: never hard-code one as required)."""
    from analysis import named

    return [
        NamedInfo(q.name, q.description, q.notes, tuple((p.name, p.default, p.help) for p in q.params))
        for q in named.list_named()
    ]


@keyed
def named_query(runs: Runs, key: str, name: str,
                params: tuple[tuple[str, str | None], ...] = ()) -> pd.DataFrame:
    """Run a named query (parameters as text, as analysis.named binds them), on the same
    connection settings and time limit as every other read."""
    from analysis import named

    query = named.get_named(name)
    bound = named.bind_params(query, dict(params))
    conn = _connection(runs)
    with conn.lock:
        if "lipschitz_estimates" in query.sql:  # once per connection, for every such query
            db.snapshot_estimates(conn.con)
    with conn.lock, db.time_limit(conn.con, QUERY_TIMEOUT_S) as cur:
        if query.finisher is None:
            return cur.sql(query.sql, params=bound or None).df()
        stage = named.relation_arrow(cur.sql(query.sql, params=bound or None))
    # a query finished in Python (claims: bootstrap and verdicts), outside the lock
    return named.finish_named(query, stage, dict(params)).to_pandas()


# ---------------------------------------------------------------- SQL page


QueryRefused = guard.QueryRefused
EXAMPLE_SQL = statement("dashboard/console_example")

QueryStopped = db.QueryStopped


class QueryFailed(Exception):
    """An allowed console query that DuckDB could not run (one-line message)."""


def run_sql(runs: Runs, sql: str, limit: int = 10_000, timeout_s: float = SQL_TIMEOUT_S) -> pd.DataFrame:
    """Run one console query checked by analysis.guard, stopped by DuckDB after `timeout_s`:
    QueryRefused for anything not one read-only query over the views, QueryStopped when it ran
    out of time, QueryFailed when DuckDB rejects it (bad column, type error, ...)."""
    conn = _connection(runs)
    with conn.lock:
        try:
            guard.check_query(conn.con, sql)
            checked = conn.con.extract_statements(sql)[0].query
            with db.time_limit(conn.con, timeout_s) as cur:
                relation = cur.sql(checked)
                if limit is not None:
                    relation = relation.limit(int(limit))
                return relation.df()
        except (QueryRefused, QueryStopped):
            raise
        except Exception as err:  # noqa: BLE001 - the console boundary: any failure is a message
            raise QueryFailed(" ".join(str(err).split()) or type(err).__name__) from None


def displayable(df: pd.DataFrame) -> pd.DataFrame:
    """A result frame the page can draw: binary columns (PNG bytes) shown as their size."""
    out = df.copy()
    for col in out.columns:
        sample = out[col].dropna()
        if len(sample) and isinstance(sample.iloc[0], (bytes, bytearray, memoryview)):
            out[col] = out[col].map(lambda b: f"<{len(b)} bytes>" if b is not None else None)
    return out


@keyed
def view_columns(runs: Runs, key: str) -> pd.DataFrame:
    """Columns of each view, for the SQL console's help."""
    return _connection(runs).df("dashboard/view_columns")
