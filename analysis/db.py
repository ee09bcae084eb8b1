"""Open one or more run directories as an in-process DuckDB database of read-only views.

    con = open_runs(["runs/demo"])            # views: match perturb lipschitz units pairs images
                                              # (+ settings: one row per probe setting)
    con.sql("SELECT model, avg(success::INT) FROM match WHERE status = 'ok' GROUP BY model")

Each view reads `RUN/results/<table>/*/*/*.parquet` (hive partition folders `probe=…/model=…`,
`union_by_name`, so runs written by different versions union cleanly) and is unioned by name
with an empty table of the table's schema from sweep/schema.py: every view always has every
schema column with its schema type, even while a run is still being written and a table has no
file yet (the view is then empty). Globs are evaluated at query time, so new files of a table that
already had one are picked up at once; a table that had no file at all when the run was opened
appears after the next `open_runs` (it is cheap: no data is read until a query runs).

The `match` and `perturb` views carry the k-NN labels of the labels pass: their `knn_src`,
`knn_tgt`, `knn_adv` come from the run's `labels` table (joined on run_id, unit_id, pair_id and,
for perturb, eps) wherever the pass labelled the row, else from the file (runs written before the
pass), and they gain `knn_src_name`, `knn_tgt_name`, `knn_adv_name`, `knn_k`, `knn_bank` and
`knn_bank_size` after the schema columns.

A derived view `settings` has one row per probe setting (`config_hash`, which the engine derives
from probe, parameters, model, weights and embedding point): `probe, model, weights, embed,
params` and `setting`, a short readable text of the parameters. `setting` names only the
parameters that differ between the settings of that probe in the opened runs (`lr=0.08,
preset=paper`); where a probe has one setting it lists every parameter that is not null. Named
queries join it to label their per-setting rows.

Table macros (`MACROS`) hold the row filters the named queries share; each takes the bound
filters `(run_id, model, weights, config_hash)`, positionally, where NULL means all:

- `match_rows(…)`, `perturb_rows(…)`, `lipschitz_rows(…)`: the view's rows under those filters;
- `match_ok(…)`, `perturb_ok(…)`, `lipschitz_ok(…)`: the same, status 'ok' only;
- `lipschitz_estimates(…)`: one row per ok lipschitz direction (`run_id, unit_id, pair_id, model,
  weights, embed, config_hash, family, direction`) with its `estimate` (l_jvp, or l_fd at the
  smallest h where l_jvp is missing), `sigma` (max) and `params`.

They only read the views, so the SQL console (analysis.guard) may call them too.

The connection is sandboxed (unless `sandbox=False`): only the run directories can be read
(`allowed_directories`), no other file, extension or network access (`enable_external_access =
false`), and the configuration is locked. Never imports torch or Ray.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sweep.schema import KNN_COLUMNS, LABEL_TABLES, RESULT_TABLES, SCHEMAS, STATUS_OK, UNIT_TABLES

VIEWS: tuple[str, ...] = UNIT_TABLES  # match, perturb, lipschitz, pairs, units, images
DERIVED_VIEWS: tuple[str, ...] = ("settings",)  # views over VIEWS (no files of their own)

# One row per config_hash. Every CTE keeps `probe` as a group key, so a query that asks for one
# probe's settings (`WHERE probe = 'match'`) reads only that probe's files (hive partitions).
_SETTINGS_SQL = """
CREATE OR REPLACE VIEW settings AS
WITH configs AS (
    SELECT probe, config_hash, any_value(model) AS model, any_value(weights) AS weights,
           any_value(embed) AS embed, any_value(params) AS params
    FROM (SELECT probe, config_hash, model, weights, embed, params FROM units
          UNION ALL SELECT DISTINCT probe, config_hash, model, weights, embed, params FROM match
          UNION ALL SELECT DISTINCT probe, config_hash, model, weights, embed, params FROM perturb
          UNION ALL SELECT DISTINCT probe, config_hash, model, weights, embed, params FROM lipschitz)
    GROUP BY probe, config_hash
),
objects AS (
    SELECT DISTINCT probe, params FROM configs
    WHERE params IS NOT NULL AND json_valid(params) AND json_type(params) = 'OBJECT'
),
keyed AS (
    SELECT probe, params, unnest(json_keys(params)) AS key FROM objects
),
entries AS (
    SELECT probe, params, key,
           coalesce(json_extract_string(params, '$."' || key || '"'), 'null') AS value
    FROM keyed
),
varying AS (
    SELECT e.probe, e.key
    FROM entries AS e
    JOIN (SELECT probe, count(*) AS n FROM objects GROUP BY probe) AS c USING (probe)
    GROUP BY e.probe, e.key, c.n
    HAVING count(DISTINCT e.value) > 1 OR count(*) < c.n
),
texts AS (
    SELECT e.probe, e.params,
           string_agg(e.key || '=' || e.value, ', ' ORDER BY e.key)
             FILTER (WHERE v.key IS NOT NULL) AS differing,
           string_agg(e.key || '=' || e.value, ', ' ORDER BY e.key)
             FILTER (WHERE e.value <> 'null') AS every
    FROM entries AS e LEFT JOIN varying AS v USING (probe, key)
    GROUP BY e.probe, e.params
)
SELECT c.probe, c.config_hash, c.model, c.weights, c.embed, c.params,
       coalesce(t.differing, t.every, c.params, c.config_hash) AS setting
FROM configs AS c
LEFT JOIN texts AS t ON t.probe = c.probe AND t.params = c.params
"""
# Table macros over the views; a macro's parameters are bound values, never SQL text. The
# parameter names carry a trailing underscore so that none of them shadows a column.
_FILTERS = ("run_id", "model", "weights", "config_hash")
_MACRO_PARAMS = ", ".join(f"{name}_" for name in _FILTERS)
_FILTER_SQL = "\n  AND ".join(f"({name}_ IS NULL OR {name} = {name}_)" for name in _FILTERS)
_ESTIMATE_KEYS = ("run_id, unit_id, pair_id, model, weights, embed, config_hash, family, "
                  "direction")
_MACRO_SQL = tuple(
    f"CREATE OR REPLACE MACRO {table}_rows({_MACRO_PARAMS}) AS TABLE\n"
    f"SELECT * FROM memory.main.{table}\nWHERE {_FILTER_SQL}"  # qualified: a caller's CTE cannot stand in
    for table in RESULT_TABLES
) + tuple(
    f"CREATE OR REPLACE MACRO {table}_ok({_MACRO_PARAMS}) AS TABLE\n"
    f"SELECT * FROM memory.main.{table}_rows({_MACRO_PARAMS}) WHERE status = '{STATUS_OK}'"
    for table in RESULT_TABLES
) + (
    f"""CREATE OR REPLACE MACRO lipschitz_estimates({_MACRO_PARAMS}) AS TABLE
SELECT {_ESTIMATE_KEYS},
       coalesce(max(l_jvp), arg_min(l_fd, h)) AS estimate,
       max(sigma) AS sigma,
       any_value(params) AS params
FROM memory.main.lipschitz_ok({_MACRO_PARAMS})
GROUP BY {_ESTIMATE_KEYS}""",
)
MACROS: tuple[str, ...] = (
    *(f"{table}_rows" for table in RESULT_TABLES),
    *(f"{table}_ok" for table in RESULT_TABLES),
    "lipschitz_estimates",
)
# k-NN label columns the match and perturb views take from the labels pass's `labels` table.
KNN_EXTRA_COLUMNS = ("knn_src_name", "knn_tgt_name", "knn_adv_name", "knn_k", "knn_bank", "knn_bank_size")


def _knn_view_sql(table: str) -> str:
    """The `table` view: its files' rows, with knn_* taken from the labels table where the labels
    pass labelled the row (else what the file holds: runs written before the pass), plus the
    label names, k, bank and bank size."""
    replaced = ", ".join(
        f"CASE WHEN l.unit_id IS NULL THEN r.{c} ELSE l.{c} END AS {c}" for c in KNN_COLUMNS
    )
    extra = ", ".join(f"l.{c}" for c in KNN_EXTRA_COLUMNS)
    eps = " AND l.eps IS NOT DISTINCT FROM r.eps" if "eps" in SCHEMAS[table].names else ""
    return (
        f"CREATE OR REPLACE VIEW {table} AS SELECT r.* REPLACE ({replaced}), {extra} "
        f"FROM _files_{table} AS r LEFT JOIN (SELECT * FROM labels WHERE probe = '{table}') AS l "
        f"ON l.run_id = r.run_id AND l.unit_id = r.unit_id AND l.pair_id = r.pair_id{eps}"
    )


_RUN_MARKERS = ("spec.yaml", "manifest.json", "progress.json", "results")


class RunNotFound(Exception):
    """A path given as a run directory does not exist or is not a vitsweep run (one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _check_run_dir(path: str | Path) -> Path:
    run = Path(path).expanduser()
    if not run.exists():
        raise RunNotFound(f"run directory not found: {path}")
    if not run.is_dir():
        raise RunNotFound(f"not a directory: {path}")
    if not any((run / marker).exists() for marker in _RUN_MARKERS):
        raise RunNotFound(
            f"not a vitsweep run (no spec.yaml, manifest.json, progress.json or results/): {path}"
        )
    return run.resolve()


def _table_glob(run: Path, table: str) -> str | None:
    """The Parquet glob of one table in one run, or None while the table has no file yet."""
    folder = run / "results" / table
    if not folder.is_dir() or next(folder.glob("*/*/*.parquet"), None) is None:
        return None
    return (folder / "*" / "*" / "*.parquet").as_posix()


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _create_view(con: duckdb.DuckDBPyConnection, table: str, globs: list[str], name: str | None = None) -> None:
    """View `name` (default: the table's name) over the table's files, with every schema column."""
    name = name or table
    empty_name = f"_empty_{table}"
    empty = pa.Table.from_batches([], schema=SCHEMAS[table])
    con.register("_arrow_empty", empty)
    con.execute(f"CREATE OR REPLACE TABLE {empty_name} AS SELECT * FROM _arrow_empty")
    con.unregister("_arrow_empty")
    if not globs:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {empty_name}")
        return
    files = "[" + ", ".join(_sql_string(g) for g in globs) + "]"
    con.execute(
        f"CREATE OR REPLACE VIEW {name} AS "
        f"SELECT * FROM {empty_name} UNION ALL BY NAME "
        f"SELECT * FROM read_parquet({files}, hive_partitioning = true, union_by_name = true)"
    )


def open_runs(run_dirs: Sequence[str | Path], *, sandbox: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `match`, `perturb`, `lipschitz`, `units`,
    `pairs`, `images` over the union of the given runs, the derived view `settings` and the
    table macros `MACROS`. RunNotFound for a bad path."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise RunNotFound("no run directory given")
    runs: list[Path] = []
    for path in run_dirs:
        run = _check_run_dir(path)
        if run not in runs:
            runs.append(run)
    con = duckdb.connect(":memory:")
    for table in (*VIEWS, "labels"):
        globs = [g for g in (_table_glob(run, table) for run in runs) if g is not None]
        _create_view(con, table, globs, name=f"_files_{table}" if table in LABEL_TABLES else None)
    for table in LABEL_TABLES:
        con.execute(_knn_view_sql(table))
    con.execute(_SETTINGS_SQL)
    for macro in _MACRO_SQL:
        con.execute(macro)
    if sandbox:
        allowed = "[" + ", ".join(_sql_string(run.as_posix() + "/") for run in runs) + "]"
        con.execute(f"SET allowed_directories = {allowed}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None  # caught mid-rewrite by a non-atomic writer: treat as not there yet
    return value if isinstance(value, dict) else None


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/progress.json as a dict, or None when it is missing or unreadable."""
    return _read_json(Path(run_dir) / "progress.json")


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/manifest.json as a dict, or None when it is missing or unreadable."""
    return _read_json(Path(run_dir) / "manifest.json")


def read_spec_text(run_dir: str | Path) -> str | None:
    """RUN/spec.yaml as text, or None when it is missing."""
    return _read_text(Path(run_dir) / "spec.yaml")
