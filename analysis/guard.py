"""The one SQL guard: untrusted SQL runs read-only, for the dashboard's SQL console and for
`vitsweep query`.

    df = run_readonly(con, "SELECT model, avg(psnr) FROM match GROUP BY model")   # the console
    statement = read_only_statement(con, sql)                                      # vitsweep query

`vitsweep query` (`read_only_statement`) takes exactly one statement of type SELECT (DESCRIBE,
SUMMARIZE, SHOW included) or a plain EXPLAIN of a SELECT (EXPLAIN ANALYZE runs its statement and is
refused); files outside the runs are refused by the sandboxed connection (analysis.db.open_runs).
DuckDB's own parse errors pass through as duckdb.Error.

The console (`check_query`, `run_readonly`) is stricter:

checks, all with DuckDB's own parser (no regular expressions over SQL text):

1. exactly one statement (`con.extract_statements`), of type SELECT (this includes DESCRIBE,
   SUMMARIZE and SHOW of a view);
2. its parse tree (`json_serialize_sql`) holds no table function (read_csv, read_parquet, glob,
   query_table, …) and references no table but the run's views (`VIEWS`, and `DERIVED_VIEWS`:
   `settings`) and the query's own CTE names (plain identifiers only; a quoted path such as
   `FROM '/etc/passwd'` is a table reference, so it is refused), no other catalog or schema,
   and no function from `_FORBIDDEN_FUNCTIONS`. The one table functions allowed are the run's
   table macros (`MACROS` of analysis.db: `match_ok(run_id, model, weights, config_hash)`, …),
   which only read the views; their arguments are checked like the rest of the tree.

Defense in depth: `analysis.db.open_runs` sandboxes the connection (no file outside the runs, no
extensions, configuration locked), and the query runs on a fresh cursor, so a refusal or an error
leaves the caller's connection as it was. Refusals raise `QueryRefused` with a one-line message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import duckdb

from analysis.db import DERIVED_VIEWS, MACROS, VIEWS

if TYPE_CHECKING:  # pandas is imported by DuckDB's .df() only when a DataFrame is asked for
    import pandas as pd

_FORBIDDEN_FUNCTIONS = frozenset(
    {"getenv", "current_setting", "getvariable", "query", "query_table", "read_text", "read_blob",
     "read_csv", "read_csv_auto", "read_parquet", "read_json", "read_json_auto", "glob"}
)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_ALLOWED_SCHEMAS = frozenset({"", "main"})
_ALLOWED_CATALOGS = frozenset({"", "memory"})


class QueryRefused(Exception):
    """A query the SQL console will not run (one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _own_cte_names(node: dict[str, Any]) -> set[str]:
    """The CTE names a query node defines (visible in that node's subtree only)."""
    cte_map = node.get("cte_map")
    names: set[str] = set()
    if isinstance(cte_map, dict):
        for entry in cte_map.get("map", []):
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                names.add(entry["key"].lower())
    return names


def _walk_scoped(node: Any, visible: frozenset[str] = frozenset()) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """Every dict node with the CTE names in scope there: a CTE defined in a subquery does not
    cover a table of the same name outside it (which would be a system view, say)."""
    if isinstance(node, dict):
        own = _own_cte_names(node)
        if own:
            visible = visible | own
        yield node, visible
        for value in node.values():
            yield from _walk_scoped(value, visible)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_scoped(item, visible)


def _check_tree(tree: dict[str, Any], allowed: set[str], macros: set[str]) -> None:
    for node, ctes in _walk_scoped(tree):
        odd = sorted(name for name in _own_cte_names(node) if not _IDENTIFIER.match(name))
        if odd:  # a CTE named like a path would shadow it: harmless, but there is no need for it
            raise QueryRefused(f"CTE names must be plain identifiers, not {odd[0]!r}")
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            fn = node.get("function")
            fn = fn if isinstance(fn, dict) else {}
            name = str(fn.get("function_name", "?"))
            schema = str(fn.get("schema", "")).lower()
            catalog = str(fn.get("catalog", "")).lower()
            if (name.lower() not in macros or schema not in _ALLOWED_SCHEMAS
                    or catalog not in _ALLOWED_CATALOGS):
                raise QueryRefused(f"table functions are not allowed (found {name}) except the "
                                   f"macros {', '.join(sorted(macros))}; "
                                   f"query the views: {', '.join(sorted(allowed))}")
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            schema = str(node.get("schema_name", "")).lower()
            catalog = str(node.get("catalog_name", "")).lower()
            if schema not in _ALLOWED_SCHEMAS or catalog not in _ALLOWED_CATALOGS:
                raise QueryRefused(f"only the run's views may be queried, not {catalog or schema}.{name}")
            lowered = name.lower()
            if lowered not in allowed and lowered not in ctes:
                raise QueryRefused(f"unknown table {name!r}: query the views "
                                   f"{', '.join(sorted(allowed))}")
        if kind == "SHOW_REF":
            name = str(node.get("table_name", ""))
            special = node.get("show_type") == "SHOW_SPECIAL" and name == '"tables"'
            if name and name.lower() not in allowed and not special:
                raise QueryRefused(f"only the run's views may be described, not {name}")
        if node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in _FORBIDDEN_FUNCTIONS:
                raise QueryRefused(f"function {name} is not allowed in the SQL console")


def _statement_word(statement: Any) -> str:
    """The statement's keyword as the user wrote it (INSTALL, USE, CHECKPOINT), not DuckDB's
    internal type (LOAD, SET, CALL)."""
    match = re.match(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*([A-Za-z]+)", statement.query, flags=re.DOTALL)
    return match.group(1).upper() if match else statement.type.name


def read_only_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The one read-only statement in `sql` (SELECT, DESCRIBE, SUMMARIZE, SHOW or a plain
    EXPLAIN of a SELECT), for `vitsweep query`; QueryRefused for anything else. Files outside
    the runs are refused by the sandboxed connection; a parse error raises duckdb.Error."""
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        raise QueryRefused(f"give exactly one SQL statement, got {len(statements)}")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs its statement: only a plain EXPLAIN of a SELECT is read-only
        inner = re.sub(r"^\s*EXPLAIN\s+", "", statement.query, count=1, flags=re.IGNORECASE)
        if re.match(r"\s*ANALY[SZ]E\b", inner, flags=re.IGNORECASE):
            raise QueryRefused("vitsweep query is read-only: EXPLAIN ANALYZE runs its statement and is refused")
        inner_statements = con.extract_statements(inner)
        if len(inner_statements) != 1 or inner_statements[0].type != duckdb.StatementType.SELECT:
            raise QueryRefused("vitsweep query is read-only: only EXPLAIN of a SELECT is allowed")
    elif statement.type != duckdb.StatementType.SELECT:
        raise QueryRefused(f"vitsweep query is read-only: {_statement_word(statement)} statements are refused")
    return statement.query


def check_query(con: duckdb.DuckDBPyConnection, sql: str,
                allowed: frozenset[str] | set[str] = frozenset(VIEWS + DERIVED_VIEWS),
                macros: frozenset[str] | set[str] = frozenset(MACROS)) -> None:
    """Raise QueryRefused unless `sql` is one SELECT over the allowed views (and the allowed
    table macros, which read only those views)."""
    if not sql or not sql.strip():
        raise QueryRefused("empty query")
    cur = con.cursor()
    try:
        try:
            statements = cur.extract_statements(sql)
        except duckdb.Error as err:
            raise QueryRefused(f"syntax error: {err}") from None
        if len(statements) != 1:
            raise QueryRefused(f"exactly one statement is allowed, got {len(statements)}")
        statement = statements[0]
        if statement.type != duckdb.StatementType.SELECT:
            raise QueryRefused(f"only SELECT queries are allowed, not {statement.type.name}")
        raw = cur.execute("SELECT json_serialize_sql($1)", [statement.query]).fetchall()[0][0]
    finally:
        cur.close()
    tree = json.loads(raw)
    if tree.get("error"):
        raise QueryRefused(f"cannot check query: {tree.get('error_message', 'parse error')}")
    _check_tree(tree, {name.lower() for name in allowed}, {name.lower() for name in macros})


def run_readonly(con: duckdb.DuckDBPyConnection, sql: str,
                 limit: int | None = 10_000) -> pd.DataFrame:
    """Run one untrusted SELECT over the run's views; at most `limit` rows (None: all).
    QueryRefused for anything else; duckdb.Error (one line) when the query itself fails."""
    check_query(con, sql)
    statement = con.extract_statements(sql)[0].query
    cur = con.cursor()
    try:
        relation = cur.sql(statement)
        if limit is not None:
            relation = relation.limit(int(limit))
        return relation.df()
    finally:
        cur.close()
