"""Open one or more run directories as an in-process DuckDB database of read-only views.

    con = open_runs(["runs/demo"])            # views: match perturb lipschitz units pairs images
                                              # (+ settings: one row per probe setting)
    con.sql("SELECT model, avg(success::INT) FROM match WHERE status = 'ok' GROUP BY model")

Each view reads `RUN/results/<table>/*/*/*.parquet` (hive partition folders `probe=…/model=…`;
one read per run, unioned by name, so runs written by different versions union cleanly; inside
one run `union_by_name` is used only when the run's first and newest file differ in columns:
unifying 1,600 footers costs seconds per query) and is unioned by name
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

A derived view `unit_rows` has one row per unit, key and status (`run_id, unit_id, model,
weights, embed, probe, config_hash, params, status`) that has result rows, with their count
`rows`: the one scan of every result row that `settings`, the `overview` query, the `claims`
query's list of settings and `read_stats` share.

Table macros (`MACROS`) hold the row filters the named queries share; each takes the bound
filters `(run_id, model, weights, config_hash)`, positionally, where NULL means all:

- `match_rows(…)`, `perturb_rows(…)`, `lipschitz_rows(…)`: the view's rows under those filters;
- `match_ok(…)`, `perturb_ok(…)`, `lipschitz_ok(…)`: the same, status 'ok' only;
- `lipschitz_estimates(…)`: one row per ok lipschitz direction (`run_id, unit_id, pair_id, model,
  weights, embed, config_hash, family, direction`) with its `estimate` (l_jvp, or l_fd at the
  smallest h where l_jvp is missing), `sigma` (max) and `params`.

They only read the views, so the SQL console (analysis.guard) may call them too.

Resources: every connection gets the same `Limits` (DuckDB `memory_limit`, `threads`) and a
Parquet footer cache. `time_limit(con, seconds)` gives a cursor whose query DuckDB interrupts
after `seconds` (QueryStopped: "Query stopped after N s"). `file_listing(runs)` (names, sizes,
mtimes of the Parquet files) is the key callers cache results on; `read_stats` counts the units,
files and rows the runs hold. `open_runs(…, snapshot=True)` computes `unit_rows` and `settings`
and reads `units` once (for callers that ask many questions and re-open when the listing changes: the report, the
dashboard), and `snapshot_estimates(con)` then does the same for `lipschitz_estimates` when the caller needs it
(the report at once, the dashboard at its first Lipschitz question).

To add a table: give it a schema in sweep/schema.py's UNIT_TABLES and it gets a view like the
others (`_create_view`); a derived view goes next to `settings` (`DERIVED_VIEWS`).

Checking run directories, listing their files and reading their JSON and YAML files is
analysis/rundirs.py's job (re-exported here: `RunNotFound`, `check_runs`, `file_listing`,
`read_progress`, `read_manifest`, `read_spec_text`).

A run may also be an object-store URI (`s3://bucket/prefix`): its files are listed and read
through fsspec (s3fs; endpoint and credentials from the usual AWS variables, AWS_ENDPOINT_URL
included), registered into DuckDB as a filesystem. DuckDB's own httpfs extension is not used:
it has to be downloaded, which an offline machine cannot do.

The connection is sandboxed (unless `sandbox=False`): only the run directories can be read
(`allowed_directories`), no other file, extension or network access (`enable_external_access =
false`), and the configuration is locked. Never imports torch or Ray.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from analysis.rundirs import (  # re-exported: callers import them from analysis.db too
    RunNotFound,
    _Remote,
    _remote_fs,
    _same_schema,
    _table_files,
    check_runs,
    file_listing,
    read_manifest,
    read_progress,
    read_spec_text,
)
from sweep.schema import KNN_COLUMNS, LABEL_TABLES, RESULT_TABLES, SCHEMAS, STATUS_OK, UNIT_TABLES

MEMORY_LIMIT_ENV = "VITSWEEP_MEMORY_LIMIT"
THREADS_ENV = "VITSWEEP_THREADS"


@dataclass(frozen=True)
class Limits:
    """The DuckDB resource settings of every analysis connection (`vitsweep query`, `vitsweep
    report`, the dashboard): one place, so a named query costs the same everywhere.

    memory_limit: DuckDB's `memory_limit` (its buffer manager; a query that needs more fails
    with an out-of-memory error instead of taking the machine). threads: DuckDB's `threads`
    (None: one per core). The environment variables VITSWEEP_MEMORY_LIMIT and VITSWEEP_THREADS
    change the defaults."""

    memory_limit: str = field(default_factory=lambda: os.environ.get(MEMORY_LIMIT_ENV, "1GB"))
    threads: int | None = field(
        default_factory=lambda: int(os.environ[THREADS_ENV]) if os.environ.get(THREADS_ENV) else None)


VIEWS: tuple[str, ...] = UNIT_TABLES  # match, perturb, lipschitz, pairs, units, images
DERIVED_VIEWS: tuple[str, ...] = ("unit_rows", "settings")  # views over VIEWS (no files of their own)

# One row per unit, key and status that has result rows, with how many rows it holds. The one
# scan of the result tables that `settings`, the overview, the claims' per-setting markers and the
# read counts share (a snapshot connection computes it once). `params` is a key too, so `settings`
# can read it here. `probe` is the files' partition folder, which for a result table is its name.
_UNIT_ROWS_KEYS = "run_id, unit_id, model, weights, embed, probe, config_hash, params, status"
_UNIT_ROWS_SQL = (
    "CREATE OR REPLACE VIEW unit_rows AS\n"
    f"SELECT {_UNIT_ROWS_KEYS}, count(*) AS rows\n"
    "FROM (" + "\n      UNION ALL ".join(f"SELECT {_UNIT_ROWS_KEYS} FROM {table}"
                                          for table in RESULT_TABLES) + ")\n"
    f"GROUP BY {_UNIT_ROWS_KEYS}"
)
_UNIT_ROWS_SNAPSHOT = "_unit_rows_snapshot"

# One row per config_hash. Every CTE keeps `probe` as a group key, so a query that asks for one
# probe's settings (`WHERE probe = 'match'`) reads only that probe's files (hive partitions).
_SETTINGS_SQL = """
CREATE OR REPLACE VIEW settings AS
WITH configs AS (
    SELECT probe, config_hash, any_value(model) AS model, any_value(weights) AS weights,
           any_value(embed) AS embed, any_value(params) AS params
    FROM (SELECT probe, config_hash, model, weights, embed, params FROM units
          UNION ALL SELECT DISTINCT probe, config_hash, model, weights, embed, params FROM unit_rows)
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


def _knn_view_sql(table: str, labels: str) -> str:
    """The `table` view: its files' rows, with knn_* taken from the labels relation `labels` (the
    labels pass's files of this probe, or the empty labels table) where the pass labelled the
    row (else what the file holds: runs written before the pass), plus the label names, k, bank
    and bank size. The relation is chosen per probe when the connection opens, never filtered
    here: DuckDB 2.0.1 drops an outer LIMIT when a view LEFT JOINs a filtered empty relation
    (tests/test_guard.py's limit tests show it)."""
    replaced = ", ".join(
        f"CASE WHEN l.unit_id IS NULL THEN r.{c} ELSE l.{c} END AS {c}" for c in KNN_COLUMNS
    )
    extra = ", ".join(f"l.{c}" for c in KNN_EXTRA_COLUMNS)
    eps = " AND l.eps IS NOT DISTINCT FROM r.eps" if "eps" in SCHEMAS[table].names else ""
    return (
        f"CREATE OR REPLACE VIEW {table} AS SELECT r.* REPLACE ({replaced}), {extra} "
        f"FROM _files_{table} AS r LEFT JOIN {labels} AS l "
        f"ON l.run_id = r.run_id AND l.unit_id = r.unit_id AND l.pair_id = r.pair_id{eps}"
    )


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_sql(run: Path, table: str, partition: str = "*") -> str | None:
    """A SELECT over one run's files of one table (or of one first-level partition of it, e.g.
    `probe=match`), or None while it has none. The glob is evaluated at query time, so files
    written later are read too."""
    files = _table_files(run, table)
    if partition != "*":
        files = [f for f in files if f"/{table}/{partition}/" in str(f)]  # type: ignore[assignment]
    if not files:
        return None
    glob = _sql_string(f"{run}/results/{table}/{partition}/*/*.parquet" if isinstance(run, _Remote)
                       else (run / "results" / table / partition / "*" / "*.parquet").as_posix())
    by_name = "false" if _same_schema(files) else "true"
    return (f"SELECT * FROM read_parquet({glob}, hive_partitioning = true, "
            f"union_by_name = {by_name})")


def _create_view(con: duckdb.DuckDBPyConnection, table: str, reads: list[str],
                 name: str | None = None) -> None:
    """View `name` (default: the table's name): the empty table of its schema unioned by name
    with every run's files."""
    name = name or table
    empty_name = f"_empty_{table}"
    empty = pa.Table.from_batches([], schema=SCHEMAS[table])
    con.register("_arrow_empty", empty)
    con.execute(f"CREATE OR REPLACE TABLE {empty_name} AS SELECT * FROM _arrow_empty")
    con.unregister("_arrow_empty")
    parts = [f"SELECT * FROM {empty_name}", *reads]
    con.execute(f"CREATE OR REPLACE VIEW {name} AS " + " UNION ALL BY NAME ".join(parts))


def open_runs(run_dirs: Sequence[str | Path], *, sandbox: bool = True,
              limits: Limits | None = None, snapshot: bool = False,
              writable: Sequence[Path] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `match`, `perturb`, `lipschitz`, `units`,
    `pairs`, `images` over the union of the given runs, the derived views `unit_rows` and
    `settings` and the table macros `MACROS`, under `limits` (memory, threads; default `Limits()`).

    snapshot: compute `unit_rows` and `settings` once now (one scan of the result tables)
    instead of at every query that reads them, and read the `units` files (one small file per unit) once into memory; for
    a caller that asks many questions of the files as they are now and opens a new connection
    when they change (the report; the dashboard, whose connection is keyed on the file
    listing). The other views stay live either way. RunNotFound for a bad path.

    writable: files the sandboxed connection may also write (and read): the output file of
    `vitsweep query --output`, which DuckDB's COPY writes itself (analysis.export)."""
    runs = check_runs(run_dirs)
    limits = limits or Limits()
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = {_sql_string(limits.memory_limit)}")
    # spill files go to the system's temp folder, not a `.tmp` in the user's working directory
    spill = os.path.join(tempfile.gettempdir(), "vitsweep-duckdb")
    con.execute(f"SET temp_directory = {_sql_string(spill)}")
    if limits.threads:
        con.execute(f"SET threads = {int(limits.threads)}")
    con.execute("SET parquet_metadata_cache = true")  # footers read once per connection
    for protocol in sorted({str(run).split("://", 1)[0] for run in runs if isinstance(run, _Remote)}):
        con.register_filesystem(_remote_fs(f"{protocol}://"))
    for table in (*VIEWS, "labels"):
        reads = [r for r in (_read_sql(run, table) for run in runs) if r]
        # match and perturb files are read as _files_*; their views join the labels pass's k-NN
        _create_view(con, table, reads, name=f"_files_{table}" if table in LABEL_TABLES else None)
    for table in LABEL_TABLES:
        reads = [r for r in (_read_sql(run, "labels", f"probe={table}") for run in runs) if r]
        labels = "_empty_labels"
        if reads:
            labels = f"_labels_{table}"
            _create_view(con, "labels", reads, name=labels)
        con.execute(_knn_view_sql(table, labels))
    con.execute(_UNIT_ROWS_SQL)
    con.execute(_SETTINGS_SQL)
    if snapshot:
        # `units` has one small file per unit (450 files for 450 rows): opening them costs more
        # than the rows, so a snapshot reads them once (settings below reads the copy too)
        con.execute("CREATE TABLE _units_snapshot AS SELECT * FROM units")
        con.execute("CREATE OR REPLACE VIEW units AS SELECT * FROM _units_snapshot")
        # the one scan of every result row that settings, overview and claims share
        con.execute(f"CREATE TABLE {_UNIT_ROWS_SNAPSHOT} AS SELECT * FROM unit_rows")
        con.execute(f"CREATE OR REPLACE VIEW unit_rows AS SELECT * FROM {_UNIT_ROWS_SNAPSHOT}")
        con.execute("CREATE TABLE _settings_snapshot AS SELECT * FROM settings")
        con.execute("CREATE OR REPLACE VIEW settings AS SELECT * FROM _settings_snapshot")
    for macro in _MACRO_SQL:
        con.execute(macro)
    if sandbox:
        allowed = "[" + ", ".join(_sql_string((run if isinstance(run, _Remote) else run.as_posix()) + "/")
                                  for run in runs) + "]"
        con.execute(f"SET allowed_directories = {allowed}")
        if writable:
            paths = "[" + ", ".join(_sql_string(Path(p).as_posix()) for p in writable) + "]"
            con.execute(f"SET allowed_paths = {paths}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


_ESTIMATES_SNAPSHOT = "_lipschitz_estimates_snapshot"


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the connection's in-memory database holds table `name` (a snapshot)."""
    found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'memory' "
                        "AND schema_name = 'main' AND table_name = $1", [name]).fetchone()
    return bool(found and found[0])


def snapshot_estimates(con: duckdb.DuckDBPyConnection) -> None:
    """Compute `lipschitz_estimates` once (every ok direction's estimate: one scan and group-by
    of the lipschitz rows) and let the macro filter that table from now on, so the named
    queries built on it (lipschitz, lipschitz_families, lipschitz_pairs, lipschitz_directions,
    claims) stop re-reading every lipschitz file. The same rows as the live macro; for a
    connection opened with `snapshot=True` (its caller re-opens it when the files change).
    Idempotent; not thread-safe (callers hold their connection's lock)."""
    if _has_table(con, _ESTIMATES_SNAPSHOT):
        return
    nulls = ", ".join("NULL" for _ in _FILTERS)
    con.execute(f"CREATE TABLE {_ESTIMATES_SNAPSHOT} AS "
                f"SELECT * FROM memory.main.lipschitz_estimates({nulls})")
    con.execute(f"CREATE OR REPLACE MACRO lipschitz_estimates({_MACRO_PARAMS}) AS TABLE\n"
                f"SELECT * FROM memory.main.{_ESTIMATES_SNAPSHOT}\nWHERE {_FILTER_SQL}")


# ---------------------------------------------------------------- time limits


class QueryStopped(Exception):
    """A query ran past its time limit and DuckDB interrupted it (one-line message)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"Query stopped after {seconds:g} s (time limit)")


@contextmanager
def time_limit(con: duckdb.DuckDBPyConnection, seconds: float | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh cursor of `con` whose queries DuckDB interrupts after `seconds` (None or 0: no
    limit); an interrupted query raises QueryStopped. The cursor is closed on exit.

        with time_limit(con, 10) as cur:
            df = cur.sql(sql).df()

    A timer thread calls the cursor's `interrupt()` (DuckDB's own cancellation: the query
    stops at its next check, memory is released) and repeats it every half second until the
    block ends, so a query that had not started yet when the limit passed is stopped too."""
    cur = con.cursor()
    done = threading.Event()
    fired = threading.Event()

    def watchdog() -> None:
        if done.wait(seconds):
            return
        fired.set()
        while not done.is_set():
            cur.interrupt()
            done.wait(0.5)

    thread = None
    if seconds and seconds > 0:
        thread = threading.Thread(target=watchdog, name="duckdb-time-limit", daemon=True)
        thread.start()
    try:
        yield cur
    except duckdb.InterruptException:
        if fired.is_set():
            raise QueryStopped(float(seconds or 0)) from None
        raise
    finally:
        done.set()
        if thread is not None:
            thread.join()
        cur.close()


@dataclass(frozen=True)
class ReadStats:
    """How much the analysis read: units (rows of `units`), Parquet files, rows of every
    table, and the seconds it took to count them (or to build a report)."""

    units: int
    files: int
    rows: int
    seconds: float
    rows_by_table: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        return (f"read {self.units:,} units, {self.files:,} Parquet files and {self.rows:,} rows "
                f"in {self.seconds:.1f} s")


def read_stats(con: duckdb.DuckDBPyConnection, run_dirs: Sequence[str | Path]) -> ReadStats:
    """Count what the runs hold (row counts come from the Parquet footers: cheap; on a snapshot
    connection the result tables' counts come from its `unit_rows`, already in memory)."""
    start = time.perf_counter()
    files = len(file_listing(check_runs(run_dirs)))
    cur = con.cursor()
    try:
        counted = VIEWS
        counts: dict[str, int] = {}
        if _has_table(cur, _UNIT_ROWS_SNAPSHOT):
            counted = tuple(t for t in VIEWS if t not in RESULT_TABLES)
            by_probe = dict(cur.execute("SELECT probe, sum(rows) FROM unit_rows GROUP BY probe").fetchall())
            counts = {t: int(by_probe.get(t, 0)) for t in RESULT_TABLES}
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in counted)
        counts.update({name: int(n) for name, n in cur.execute(sql).fetchall()})
        counts = {t: counts[t] for t in VIEWS}
    finally:
        cur.close()
    return ReadStats(counts.get("units", 0), files, sum(counts.values()),
                     time.perf_counter() - start, counts)


__all__ = ["DERIVED_VIEWS", "KNN_EXTRA_COLUMNS", "MACROS", "VIEWS", "Limits", "QueryStopped",
           "ReadStats", "RunNotFound", "check_runs", "file_listing", "open_runs", "read_manifest",
           "read_progress", "read_spec_text", "read_stats", "snapshot_estimates", "time_limit"]
