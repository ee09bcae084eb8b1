"""Every read the dashboard makes: cached functions over analysis/ (pages never touch SQL).

Runs are passed as a tuple of path strings (hashable, so Streamlit can key its caches on them).
Caches are short-lived (`TTL_S`) so a run that is still being written refreshes on its own; the
DuckDB connection is re-opened every `CONNECTION_TTL_S`, which picks up tables that had no file
when it was first opened. Queries run on a fresh cursor under a lock: Streamlit serves sessions
from several threads, and one DuckDB connection object must not be used by two at once.

Functions here bind parameters (never f-strings of user values); the only formatted names are
view names checked against `sweep.schema.RESULT_TABLES`.

A probe run with several settings (config_hash) is never pooled: per-series reads group by
model, weights, embedding point and config_hash, and carry the setting's text (the `settings`
view of analysis.db).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from analysis import db, guard
from dashboard.formatting import series_labels
from dashboard.runs import RunStatus, run_status
from sweep.schema import RESULT_TABLES

TTL_S = 5
CONNECTION_TTL_S = 15
Runs = tuple[str, ...]


@dataclass
class _Conn:
    con: duckdb.DuckDBPyConnection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one internal query with bound parameters (positional `?` or named `$name`)."""
        with self.lock:
            cur = self.con.cursor()
            try:
                return cur.execute(sql, params if isinstance(params, Mapping) else list(params or [])).df()
            finally:
                cur.close()


@st.cache_resource(ttl=CONNECTION_TTL_S, show_spinner=False)
def _connection(runs: Runs) -> _Conn:
    return _Conn(db.open_runs(list(runs)))


def _view(table: str) -> str:
    if table not in (*RESULT_TABLES, "pairs", "units", "images", *db.DERIVED_VIEWS):
        raise ValueError(f"unknown table {table!r}")
    return table


_SETTING = "coalesce(s.setting, t.config_hash)"


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


@st.cache_data(ttl=TTL_S, show_spinner=False)
def plan(run: str) -> dict[str, Any] | None:
    """RUN/plan.json (written by `vitsweep run` at its start), or None."""
    try:
        data = json.loads((Path(run) / "plan.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- Runs page


@st.cache_data(ttl=TTL_S, show_spinner=False)
def failed_units(runs: Runs) -> pd.DataFrame:
    """Units that failed after their retries, with their errors."""
    return _connection(runs).df(
        "SELECT run_id, unit_id, model, probe, attempts, error FROM units "
        "WHERE status = 'error' ORDER BY run_id, unit_id"
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pair_errors(runs: Runs) -> pd.DataFrame:
    """Pairs whose probe or decoding failed, counted by table, model and error message."""
    parts = " UNION ALL ".join(
        f"SELECT '{t}' AS probe, model, error FROM {_view(t)} WHERE status = 'error'" for t in RESULT_TABLES
    )
    return _connection(runs).df(
        f"SELECT probe, model, error, count(*) AS rows FROM ({parts}) GROUP BY ALL ORDER BY rows DESC, probe, model"
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def row_counts(runs: Runs) -> pd.DataFrame:
    """Rows per result table and status."""
    parts = " UNION ALL ".join(
        f"SELECT '{t}' AS table_name, status, count(*) AS rows FROM {_view(t)} GROUP BY status"
        for t in RESULT_TABLES
    )
    return _connection(runs).df(f"{parts} ORDER BY table_name, status")


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_ids(runs: Runs) -> list[str]:
    """The run_id values in the results (a run's id, not its folder name)."""
    parts = " UNION ".join(f"SELECT DISTINCT run_id FROM {_view(t)}" for t in (*RESULT_TABLES, "units"))
    return _connection(runs).df(f"SELECT run_id FROM ({parts}) ORDER BY run_id")["run_id"].tolist()


# ---------------------------------------------------------------- Pairs page


@st.cache_data(ttl=TTL_S, show_spinner=False)
def probes_and_models(runs: Runs) -> dict[str, list[str]]:
    """{probe: [models with rows]} over the result tables that have rows."""
    out: dict[str, list[str]] = {}
    for table in RESULT_TABLES:
        models = _connection(runs).df(f"SELECT DISTINCT model FROM {_view(table)} ORDER BY model")["model"]
        if len(models):
            out[table] = models.tolist()
    return out


_PAIR_COLUMNS = {
    "match": "success, steps, rel_dist, cos, psnr, ssim, quant_success",
    "perturb": "count(*) AS n_eps, max(disp_over_pair) AS max_disp_over_pair, "
    "max(random_disp_over_pair) AS max_random_disp_over_pair",
    "lipschitz": "count(*) AS n_estimates, max(l_jvp) AS max_l_jvp, min(l_jvp) AS min_l_jvp",
}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pairs(runs: Runs, probe: str, models: tuple[str, ...], outcome: str = "all", limit: int = 5000) -> pd.DataFrame:
    """One row per (run, unit, pair) of `probe` for the chosen models.

    outcome: "all" | "success" | "failure" (ok rows that did not match; match only) | "error".
    """
    view = _view(probe)
    where = ["list_contains($models, model)"]
    if outcome == "error":
        where.append("status = 'error'")
    elif outcome in ("success", "failure"):
        where.append("status = 'ok'")
        if probe == "match":
            where.append("success" if outcome == "success" else "NOT success")
    keys = f"run_id, unit_id, pair_id, model, weights, {_SETTING} AS setting, status"
    source = _with_settings(view)
    if probe == "match":
        sql = f"SELECT {keys}, {_PAIR_COLUMNS[probe]}, error FROM {source} WHERE {' AND '.join(where)}"
    else:
        sql = (
            f"SELECT {keys}, {_PAIR_COLUMNS[probe]}, any_value(error) AS error FROM {source} "
            f"WHERE {' AND '.join(where)} GROUP BY ALL"
        )
    sql += " ORDER BY model, run_id, unit_id, pair_id LIMIT $limit"
    return _connection(runs).df(sql, {"models": list(models), "limit": int(limit)})


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pair_rows(runs: Runs, probe: str, run_id: str, unit_id: str, pair_id: str) -> pd.DataFrame:
    """Every row (every column) of one pair in `probe`'s table."""
    order = {"perturb": " ORDER BY norm, eps", "lipschitz": " ORDER BY family, direction, h"}.get(probe, "")
    return _connection(runs).df(
        f"SELECT * FROM {_view(probe)} WHERE run_id = ? AND unit_id = ? AND pair_id = ?{order}",
        [run_id, unit_id, pair_id],
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pair_images(runs: Runs, probe: str, run_id: str, unit_id: str, pair_id: str) -> pd.DataFrame:
    """The gallery PNGs of one pair (variant, src_png, adv_png, tgt_png as bytes); empty if none."""
    df = _connection(runs).df(
        "SELECT coalesce(variant, '') AS variant, src_png, adv_png, tgt_png FROM images "
        "WHERE probe = ? AND run_id = ? AND unit_id = ? AND pair_id = ? ORDER BY variant",
        [probe, run_id, unit_id, pair_id],
    )
    for col in ("src_png", "adv_png", "tgt_png"):  # DuckDB gives BLOBs as bytearray
        df[col] = df[col].map(lambda b: bytes(b) if b is not None else None)
    return df


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pairs_with_images(runs: Runs, probe: str) -> pd.DataFrame:
    """(run_id, unit_id, pair_id, model) of pairs that have gallery images."""
    return _connection(runs).df(
        "SELECT DISTINCT run_id, unit_id, pair_id, model FROM images WHERE probe = ?", [probe]
    )


# ---------------------------------------------------------------- Distributions page
#
# One series per (model, weights, embed, config_hash): a probe run with several settings is
# never pooled. `series` is the legend label (dashboard.formatting.series_labels: the model,
# and weights, embedding point and setting where they differ between the series).


def _with_series(df: pd.DataFrame) -> pd.DataFrame:
    df.insert(0, "series", series_labels(df))
    return df


@st.cache_data(ttl=TTL_S, show_spinner=False)
def match_metrics(runs: Runs) -> pd.DataFrame:
    """rel_dist, PSNR, SSIM (and success) of every ok match row, with a `series` label."""
    return _with_series(_connection(runs).df(
        f"SELECT model, weights, embed, {_SETTING} AS setting, config_hash, "
        f"success, rel_dist, psnr, ssim FROM {_with_settings('match')} WHERE status = 'ok' "
        "ORDER BY model, weights, embed, setting, config_hash"
    ))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def displacement_curve(runs: Runs) -> pd.DataFrame:
    """Median disp_over_pair per (series, norm, ε), adversarial and random, in long format."""
    return _with_series(_connection(runs).df(
        "SELECT model, weights, embed, setting, config_hash, norm, eps, kind, value FROM ("
        f"  SELECT model, weights, embed, {_SETTING} AS setting, config_hash, norm, eps,"
        "         median(disp_over_pair) AS adversarial, median(random_disp_over_pair) AS random"
        f"  FROM {_with_settings('perturb')} WHERE status = 'ok' GROUP BY ALL"
        ") UNPIVOT (value FOR kind IN (adversarial, random)) "
        "ORDER BY model, weights, embed, setting, config_hash, norm, eps, kind"
    ))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def lipschitz_estimates(runs: Runs, h: float | None = None) -> pd.DataFrame:
    """Lipschitz estimates of ok rows: l_jvp, and l_fd at step size `h` (all h when None)."""
    return _with_series(_connection(runs).df(
        f"SELECT model, weights, embed, {_SETTING} AS setting, config_hash, "
        f"family, direction, h, l_fd, l_jvp FROM {_with_settings('lipschitz')} "
        "WHERE status = 'ok' AND ($h IS NULL OR h = $h) "
        "ORDER BY model, weights, embed, setting, config_hash, family, direction",
        {"h": h},
    ))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def lipschitz_steps(runs: Runs) -> list[float]:
    return _connection(runs).df("SELECT DISTINCT h FROM lipschitz ORDER BY h")["h"].tolist()


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


@st.cache_data(ttl=TTL_S, show_spinner=False)
def named_query(runs: Runs, name: str, params: tuple[tuple[str, str | None], ...] = ()) -> pd.DataFrame:
    """Run a named query (parameters as text, as analysis.named binds them)."""
    from analysis import named

    conn = _connection(runs)
    with conn.lock:
        return named.run_named(conn.con, name, dict(params))


# ---------------------------------------------------------------- SQL page


QueryRefused = guard.QueryRefused
EXAMPLE_SQL = (  # the SQL console's first query: one row per probe setting, never pooled
    "SELECT model, weights, embed, setting, count(*) AS pairs, avg(success::INT) AS success_rate,\n"
    "       median(rel_dist) AS median_rel_dist, median(psnr) AS median_psnr\n"
    "FROM match JOIN (SELECT config_hash, setting FROM settings) USING (config_hash)\n"
    "WHERE status = 'ok'\nGROUP BY model, weights, embed, config_hash, setting\n"
    "ORDER BY model, weights, embed, setting"
)


class QueryFailed(Exception):
    """An allowed console query that DuckDB could not run (one-line message)."""


def run_sql(runs: Runs, sql: str, limit: int = 10_000) -> pd.DataFrame:
    """Run one console query through analysis.guard: QueryRefused for anything not a read-only
    SELECT over the views, QueryFailed when DuckDB rejects it (bad column, type error, ...)."""
    conn = _connection(runs)
    with conn.lock:
        try:
            return guard.run_readonly(conn.con, sql, limit=limit)
        except QueryRefused:
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


@st.cache_data(ttl=CONNECTION_TTL_S, show_spinner=False)
def view_columns(runs: Runs) -> pd.DataFrame:
    """Columns of each view, for the SQL console's help."""
    return _connection(runs).df(
        "SELECT table_name AS view, string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
        "AS columns FROM information_schema.columns WHERE table_schema = 'main' AND NOT starts_with(table_name, '_') "
        "GROUP BY table_name ORDER BY table_name"
    )
