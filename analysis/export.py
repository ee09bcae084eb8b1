"""Write a query's result to a file with DuckDB's own COPY, as analysis/output.py would write it.

`vitsweep query --output FILE` of a query that returns every row (447,000 lipschitz directions)
spent most of its time turning Arrow rows into CSV in Python. Here DuckDB writes the file itself:

- CSV: each row is formatted in SQL into one line that is byte for byte what
  `output.format_csv` (Python's csv module, QUOTE_MINIMAL, "\\n" line ends) writes: NULL and
  non-finite floats as empty fields, floats as Python's repr (DuckDB's shortest round-trip text is
  the same), booleans as `True`/`False`, a text quoted where Python's csv quotes it (the characters
  that make it quote are asked of the csv module itself, so a Python version that quotes more is
  followed). The line goes out through COPY with quoting off. Column types this does not cover
  (lists, binary, dates, decimals, structs, ...) return False: the caller formats those in Python.
- Parquet: COPY ... (FORMAT parquet), the same columns and values as pyarrow's writer.

    copy_result(cur, sql, params, "csv", path) -> True (written) | False (use analysis.output)

The connection must be allowed to write `path` (analysis.db.open_runs(..., writable=[path])).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import duckdb

COPY_FORMATS = ("csv", "parquet")
_INTEGERS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                       "UINTEGER", "UBIGINT"})
_FLOATS = frozenset({"FLOAT", "DOUBLE"})


def _python_csv(row: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


@lru_cache(maxsize=1)
def _quoting_characters() -> tuple[str, ...]:
    """The characters that make Python's csv writer quote a field (',', '"' and '\\n' in 3.11)."""
    return tuple(c for c in map(chr, range(128)) if _python_csv(["a" + c + "b", "x"]).startswith('"'))


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _field_sql(name: str, kind: str) -> str | None:
    """SQL text of one CSV field of column `name` (DuckDB type `kind`) as format_csv writes
    it, or None for a type it does not cover."""
    col = _identifier(name)
    if kind == "VARCHAR":
        needs = " OR ".join(f"contains({col}, chr({ord(c)}))" for c in _quoting_characters())
        return (f"CASE WHEN {col} IS NULL THEN '' WHEN {needs or 'false'} "
                f"THEN '\"' || replace({col}, '\"', '\"\"') || '\"' ELSE {col} END")
    if kind == "BOOLEAN":
        return f"CASE WHEN {col} THEN 'True' WHEN NOT {col} THEN 'False' ELSE '' END"
    if kind in _INTEGERS:
        return f"coalesce(CAST({col} AS VARCHAR), '')"
    if kind in _FLOATS:  # a float as Python's repr of it as a double; NaN, ±inf and NULL empty
        return f"CASE WHEN isfinite({col}) THEN CAST(CAST({col} AS DOUBLE) AS VARCHAR) ELSE '' END"
    if kind == '"NULL"' or kind == "NULL":
        return "''"
    return None


def csv_select(sql: str, names: Sequence[str], types: Sequence[str]) -> str | None:
    """A SELECT of one column, named by format_csv's header line, holding each row of `sql` as
    format_csv's line for it (without the line end); None when a column's type, a repeated
    name or a line end in a name needs the Python writer."""
    if not names or len({n.casefold() for n in names}) != len(names):
        return None
    header = _python_csv(list(names))[:-1]
    if "\n" in header or "\r" in header:
        return None
    fields = [_field_sql(name, kind) for name, kind in zip(names, types)]
    if any(f is None for f in fields):
        return None
    line = " || ',' || ".join(f"({f})" for f in fields)  # type: ignore[misc]
    if len(fields) == 1:  # Python quotes the only field of a row when it is empty
        line = f"CASE WHEN {line} = '' THEN '\"\"' ELSE {line} END"
    return f"SELECT {line} AS {_identifier(header)} FROM (\n{sql.strip().rstrip(';')}\n) AS _result"


def copy_result(cur: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object] | None,
                fmt: str, path: Path) -> bool:
    """Write the rows of `sql` (one SELECT; named parameters `params`) to `path` in `fmt`
    with DuckDB's COPY. False, with nothing run, when `fmt` or a column's type needs the Python
    writer of analysis.output; duckdb.Error when the query fails."""
    if fmt not in COPY_FORMATS:
        return False
    relation = cur.sql(sql, params=dict(params) if params else None)  # bound, not run
    names, types = relation.columns, [str(t) for t in relation.types]
    if fmt == "csv":
        select = csv_select(sql, names, types)
        if select is None:
            return False
        options = "FORMAT csv, HEADER true, QUOTE '', ESCAPE '', USE_TMP_FILE false"
    else:
        if len({n.casefold() for n in names}) != len(names):
            return False
        select = f"SELECT * FROM (\n{sql.strip().rstrip(';')}\n) AS _result"
        options = "FORMAT parquet, USE_TMP_FILE false"  # its own temp file would be outside the sandbox
    cur.execute(f"COPY ({select}) TO {_sql_string(str(path))} ({options})",
                dict(params) if params else None)
    return True
