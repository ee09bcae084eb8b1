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
paged in SQL. Functions here bind parameters (never f-strings of user values); the only
formatted names are view and column names checked against fixed lists.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
import streamlit as st

from analysis import db, guard
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

    def df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None,
           timeout_s: float = QUERY_TIMEOUT_S) -> pd.DataFrame:
        """Run one internal query with bound parameters (positional `?` or named `$name`)."""
        with self.lock, db.time_limit(self.con, timeout_s) as cur:
            return cur.execute(sql, params if isinstance(params, Mapping) else list(params or [])).df()


@st.cache_resource(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def _open(runs: Runs, key: str) -> _Conn:
    return _Conn(db.open_runs(list(runs), snapshot=True))  # re-opened when the listing changes


def _connection(runs: Runs) -> _Conn:
    return _open(runs, cache_key(runs))


def _view(table: str) -> str:
    if table not in (*RESULT_TABLES, "pairs", "units", "images", *db.DERIVED_VIEWS):
        raise ValueError(f"unknown table {table!r}")
    return table


_SETTING = "coalesce(s.setting, t.config_hash)"
_SERIES = "t.model, t.weights, t.embed, coalesce(s.setting, t.config_hash) AS setting, t.config_hash"
_SERIES_KEYS = "model, weights, embed, setting, config_hash"


def _with_settings(table: str) -> str:
    """`table AS t` (a result view) joined to its probe's settings (alias s) by config_hash."""
    view = _view(table)
    return (f"{view} AS t LEFT JOIN (SELECT config_hash, setting FROM settings "
            f"WHERE probe = '{view}') AS s USING (config_hash)")


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
    return _connection(runs).df(
        "SELECT run_id, unit_id, model, probe, attempts, error FROM units "
        f"WHERE status = 'error' ORDER BY run_id, unit_id LIMIT {MAX_LISTED}"
    )


@keyed
def pair_errors(runs: Runs, key: str) -> pd.DataFrame:
    """Pairs whose probe or decoding failed, counted by table, model and error message (the
    MAX_LISTED most frequent)."""
    parts = " UNION ALL ".join(
        f"SELECT '{t}' AS probe, model, error FROM {_view(t)} WHERE status = 'error'" for t in RESULT_TABLES
    )
    return _connection(runs).df(
        f"SELECT probe, model, error, count(*) AS rows FROM ({parts}) GROUP BY ALL "
        f"ORDER BY rows DESC, probe, model LIMIT {MAX_LISTED}"
    )


@keyed
def row_counts(runs: Runs, key: str) -> pd.DataFrame:
    """Rows per result table and status."""
    # unit_rows (in memory on the dashboard's snapshot connection): `probe` is the table's name
    return _connection(runs).df(
        "SELECT probe AS table_name, status, sum(rows)::BIGINT AS rows FROM unit_rows "
        "GROUP BY probe, status ORDER BY table_name, status")


@keyed
def run_ids(runs: Runs, key: str) -> list[str]:
    """The run_id values in the results (a run's id, not its folder name)."""
    # unit_rows: every unit with result rows (a snapshot: no second scan of the result files)
    return _connection(runs).df(
        "SELECT run_id FROM (SELECT DISTINCT run_id FROM unit_rows UNION SELECT DISTINCT run_id FROM units) "
        "ORDER BY run_id")["run_id"].tolist()


# ---------------------------------------------------------------- Pairs page


@keyed
def probes_and_models(runs: Runs, key: str) -> dict[str, list[str]]:
    """{probe: [models with rows]} over the result tables that have rows."""
    df = _connection(runs).df("SELECT DISTINCT probe, model FROM unit_rows ORDER BY probe, model")
    return {t: df.loc[df["probe"] == t, "model"].tolist() for t in RESULT_TABLES
            if (df["probe"] == t).any()}


_PAIR_COLUMNS = {
    "match": "success, steps, rel_dist, cos, psnr, ssim, quant_success",
    "perturb": "count(*) AS n_eps, max(disp_over_pair) AS max_disp_over_pair, "
    "max(random_disp_over_pair) AS max_random_disp_over_pair",
    "lipschitz": "count(*) AS n_estimates, max(l_jvp) AS max_l_jvp, min(l_jvp) AS min_l_jvp",
}
PAIR_KEYS = ("model", "run_id", "unit_id", "pair_id")
SORTABLE = {  # columns the Pairs table can be sorted by (besides its keys)
    "match": ("rel_dist", "psnr", "ssim", "steps", "cos"),
    "perturb": ("max_disp_over_pair", "n_eps"),
    "lipschitz": ("max_l_jvp", "min_l_jvp", "n_estimates"),
}


def _pairs_sql(probe: str, outcome: str) -> str:
    """One row per (run, unit, pair) of `probe` for the models in $models, pairs whose pair or
    unit id contains $search (case-insensitive; NULL: all)."""
    view = _view(probe)
    where = ["list_contains($models, model)",
             "($search IS NULL OR contains(lower(pair_id), $search) OR contains(lower(unit_id), $search))"]
    if outcome == "error":
        where.append("status = 'error'")
    elif outcome in ("success", "failure"):
        where.append("status = 'ok'")
        if probe == "match":
            where.append("success" if outcome == "success" else "NOT success")
    keys = f"run_id, unit_id, pair_id, model, weights, {_SETTING} AS setting, status"
    source = _with_settings(view)
    if probe == "match":
        return f"SELECT {keys}, {_PAIR_COLUMNS[probe]}, error FROM {source} WHERE {' AND '.join(where)}"
    return (f"SELECT {keys}, {_PAIR_COLUMNS[probe]}, any_value(error) AS error FROM {source} "
            f"WHERE {' AND '.join(where)} GROUP BY ALL")


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
    params = {"models": list(models), "search": search.strip().lower() or None}
    inner = _pairs_sql(probe, outcome)
    conn = _connection(runs)
    total = int(conn.df(f"SELECT count(*) AS n FROM ({inner})", params)["n"].iloc[0])
    rows = conn.df(f"SELECT * FROM ({inner}) ORDER BY {order} LIMIT $limit OFFSET $offset",
                   {**params, "limit": int(page_size), "offset": int(page) * int(page_size)})
    return rows, total


@keyed
def pair_rows(runs: Runs, key: str, probe: str, run_id: str, unit_id: str, pair_id: str) -> pd.DataFrame:
    """Every row (every column) of one pair in `probe`'s table."""
    order = {"perturb": " ORDER BY norm, eps", "lipschitz": " ORDER BY family, direction, h"}.get(probe, "")
    return _connection(runs).df(
        f"SELECT * FROM {_view(probe)} WHERE run_id = ? AND unit_id = ? AND pair_id = ?{order}",
        [run_id, unit_id, pair_id],
    )


@keyed
def pair_images(runs: Runs, key: str, probe: str, run_id: str, unit_id: str, pair_id: str) -> pd.DataFrame:
    """The gallery PNGs of one pair (variant, src_png, adv_png, tgt_png as bytes); empty if none."""
    df = _connection(runs).df(
        "SELECT coalesce(variant, '') AS variant, src_png, adv_png, tgt_png FROM images "
        "WHERE probe = ? AND run_id = ? AND unit_id = ? AND pair_id = ? ORDER BY variant",
        [probe, run_id, unit_id, pair_id],
    )
    for col in ("src_png", "adv_png", "tgt_png"):  # DuckDB gives BLOBs as bytearray
        df[col] = df[col].map(lambda b: bytes(b) if b is not None else None)
    return df


@keyed
def pairs_with_images(runs: Runs, key: str, probe: str) -> pd.DataFrame:
    """(run_id, unit_id, pair_id, model) of pairs that have gallery images (a few per unit)."""
    return _connection(runs).df(
        "SELECT DISTINCT run_id, unit_id, pair_id, model FROM images WHERE probe = ?", [probe]
    )


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


def _metric(column: str) -> str:
    if column not in MATCH_METRICS:
        raise ValueError(f"unknown match metric {column!r}")
    return column


def _match_long() -> str:
    """Ok match rows in long form (series keys, metric, x), finite values only."""
    metrics = ", ".join(map(_metric, MATCH_METRICS))
    return (f"SELECT {_SERIES_KEYS}, metric, x FROM (SELECT {_SERIES}, {', '.join(f't.{m}' for m in MATCH_METRICS)} "
            f"FROM {_with_settings('match')} WHERE t.status = 'ok') "
            f"UNPIVOT (x FOR metric IN ({metrics})) WHERE isfinite(x)")


@keyed
def match_histograms(runs: Runs, key: str, bins: int = HIST_BINS) -> pd.DataFrame:
    """Histogram bins of rel_dist, PSNR and SSIM of ok match rows, per series: columns series,
    model, weights, embed, setting, config_hash, metric, bin_start, bin_end, count. The bins of a
    metric are shared by its series (equal width between its finite minimum and maximum).
    One scan of the match rows."""
    sql = f"""
    WITH long AS MATERIALIZED ({_match_long()}),
    ranges AS (
        SELECT metric, min(x) AS lo,
               CASE WHEN max(x) > min(x) THEN (max(x) - min(x)) / $bins ELSE 1 END AS width
        FROM long GROUP BY metric
    )
    SELECT {_SERIES_KEYS}, metric, lo + b * width AS bin_start, lo + (b + 1) * width AS bin_end,
           count(*) AS count
    FROM (SELECT l.*, r.lo, r.width,
                 least(CAST(floor((l.x - r.lo) / r.width) AS INTEGER), $bins - 1) AS b
          FROM long AS l JOIN ranges AS r USING (metric))
    GROUP BY ALL ORDER BY metric, {_SERIES_KEYS}, bin_start"""
    return _with_series(_connection(runs).df(sql, {"bins": int(bins)}))


@keyed
def match_ecdf(runs: Runs, key: str, points: int = ECDF_POINTS) -> pd.DataFrame:
    """ECDF points of rel_dist, PSNR and SSIM per series (the quantiles at `points` evenly
    spaced fractions): columns series, …, metric, value, fraction. One scan of the match rows."""
    fractions = [i / (points - 1) for i in range(points)]
    sql = f"""
    SELECT {_SERIES_KEYS}, metric, unnest(quantile_cont(x, $fractions)) AS value,
           unnest($fractions) AS fraction
    FROM ({_match_long()})
    GROUP BY {_SERIES_KEYS}, metric ORDER BY metric, {_SERIES_KEYS}, fraction"""
    return _with_series(_connection(runs).df(sql, {"fractions": fractions}))


@keyed
def success_rates(runs: Runs, key: str) -> pd.DataFrame:
    """Success rate of ok match rows per series: columns series, …, n_ok, success_rate."""
    return _with_series(_connection(runs).df(
        f"SELECT {_SERIES}, count(*) AS n_ok, avg(t.success::INT) AS success_rate "
        f"FROM {_with_settings('match')} WHERE t.status = 'ok' GROUP BY ALL ORDER BY {_SERIES_KEYS}"
    ))


@keyed
def displacement_curve(runs: Runs, key: str) -> pd.DataFrame:
    """Median disp_over_pair per (series, norm, ε), adversarial and random, in long format."""
    return _with_series(_connection(runs).df(
        "SELECT model, weights, embed, setting, config_hash, norm, eps, kind, value FROM ("
        f"  SELECT {_SERIES}, norm, eps,"
        "         median(disp_over_pair) AS adversarial, median(random_disp_over_pair) AS random"
        f"  FROM {_with_settings('perturb')} WHERE status = 'ok' GROUP BY ALL"
        ") UNPIVOT (value FOR kind IN (adversarial, random)) "
        "ORDER BY model, weights, embed, setting, config_hash, norm, eps, kind"
    ))


@keyed
def lipschitz_boxes(runs: Runs, key: str, value: str = "l_jvp", h: float | None = None) -> pd.DataFrame:
    """Box-plot summary of a Lipschitz estimate (l_jvp, or l_fd at step size `h`) per series and
    direction family, over ok rows with a positive value (the axis is logarithmic): columns
    series, …, family, n, min, q1, median, q3, max; and median_l_jvp, the median l_jvp of every
    ok row of that series, family and h (for the medians table). One scan of the rows at h."""
    if value not in ("l_jvp", "l_fd"):
        raise ValueError(f"unknown Lipschitz estimate {value!r}")
    positive = f"FILTER (WHERE t.{value} > 0)"
    return _with_series(_connection(runs).df(
        f"SELECT {_SERIES}, t.family, count(*) {positive} AS n, min(t.{value}) {positive} AS min, "
        f"quantile_cont(t.{value}, 0.25) {positive} AS q1, "
        f"quantile_cont(t.{value}, 0.5) {positive} AS median, "
        f"quantile_cont(t.{value}, 0.75) {positive} AS q3, max(t.{value}) {positive} AS max, "
        "median(t.l_jvp) AS median_l_jvp "
        f"FROM {_with_settings('lipschitz')} WHERE t.status = 'ok' AND ($h IS NULL OR t.h = $h) "
        f"GROUP BY ALL ORDER BY {_SERIES_KEYS}, family",
        {"h": h},
    ))


def lipschitz_medians(runs: Runs, h: float | None = None) -> pd.DataFrame:
    """Median l_jvp per series and family (rows at step size `h`; all when None)."""
    boxes = lipschitz_boxes(runs, "l_jvp", h)
    return boxes[["series", "model", "weights", "embed", "setting", "config_hash", "family", "median_l_jvp"]]


@keyed
def lipschitz_steps(runs: Runs, key: str) -> list[float]:
    return _connection(runs).df("SELECT DISTINCT h FROM lipschitz WHERE h IS NOT NULL ORDER BY h")["h"].tolist()


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
EXAMPLE_SQL = (  # the SQL console's first query: one row per probe setting, never pooled
    "SELECT model, weights, embed, setting, count(*) AS pairs, avg(success::INT) AS success_rate,\n"
    "       median(rel_dist) AS median_rel_dist, median(psnr) AS median_psnr\n"
    "FROM match JOIN (SELECT config_hash, setting FROM settings) USING (config_hash)\n"
    "WHERE status = 'ok'\nGROUP BY model, weights, embed, config_hash, setting\n"
    "ORDER BY model, weights, embed, setting"
)


QueryStopped = db.QueryStopped


class QueryFailed(Exception):
    """An allowed console query that DuckDB could not run (one-line message)."""


def run_sql(runs: Runs, sql: str, limit: int = 10_000, timeout_s: float = SQL_TIMEOUT_S) -> pd.DataFrame:
    """Run one console query checked by analysis.guard, stopped by DuckDB after `timeout_s`:
    QueryRefused for anything not a read-only SELECT over the views, QueryStopped when it ran
    out of time, QueryFailed when DuckDB rejects it (bad column, type error, ...)."""
    conn = _connection(runs)
    with conn.lock:
        try:
            guard.check_query(conn.con, sql)
            statement = conn.con.extract_statements(sql)[0].query
            with db.time_limit(conn.con, timeout_s) as cur:
                relation = cur.sql(statement)
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
    return _connection(runs).df(
        "SELECT table_name AS view, string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
        "AS columns FROM information_schema.columns WHERE table_schema = 'main' AND NOT starts_with(table_name, '_') "
        "GROUP BY table_name ORDER BY table_name"
    )
