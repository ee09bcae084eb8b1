"""Named queries: one question per `.sql` file in analysis/queries/, parameters bound.

A query file starts with a header of `--` comment lines:

    -- description: Claim 1 (equivalence): match success rate ... per model and match setting.
    -- param: model = NULL | only this model (NULL: all models)
    -- param: config_hash = NULL | only this probe setting (NULL: all settings)
    -- any other comment line is a note shown with the description

An aggregate query never pools probe settings: it groups by `model, weights, embed, config_hash`
(plus its own keys) and returns `setting` (readable text from the `settings` view of
analysis.db), `config_hash` and the setting's `params` JSON. Every query takes the `config_hash`
filter.

A few queries finish in Python (`FINISHERS`: the query's name -> "module:function"): the SQL
gathers per-pair values and the function turns them into the answer (the `claims` query: a
bootstrap and verdicts). Such a query may declare options, read by that function and never bound
into SQL:

    -- option: criteria = NULL | a YAML file with the criteria to change

Parameters are named (`$model`) and bound by DuckDB (never formatted into the SQL). Every value
arrives as a string (from a command line or a web form); the text `NULL` (any case) or an empty
string means SQL NULL, which every filter reads as "all". A query casts a parameter it needs as
a number itself (`CAST($limit AS BIGINT)`).

    list_named() -> [NamedQuery(name, description, params, notes, sql), ...]
    run_named(con, "equivalence", {"model": "vit_b"}) -> pandas.DataFrame

The report's and the dashboard's own reads are SQL files too, in analysis/queries/report/ and
analysis/queries/dashboard/ (no header needed; not listed or offered as named queries), read by
`statement("dashboard/pair_images")`; their callers bind the parameters.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

if TYPE_CHECKING:  # pandas is imported by DuckDB's .df() only when a DataFrame is asked for
    import pandas as pd

QUERY_DIR = Path(__file__).with_name("queries")
_PARAM = re.compile(r"^--\s*param:\s*(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<default>[^|]*?)\s*(?:\|\s*(?P<help>.*))?$")
_OPTION = re.compile(r"^--\s*option:\s*(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<default>[^|]*?)\s*(?:\|\s*(?P<help>.*))?$")
# Named queries whose SQL rows a Python function finishes: name -> "module:function", called as
# function(rows: pa.Table, options: dict[str, str | None]) -> pa.Table.
FINISHERS: dict[str, str] = {"claims": "analysis.claims:finish_named",
                             "transfer": "analysis.transfer:finish_named"}
_DESCRIPTION = re.compile(r"^--\s*description:\s*(?P<text>.*)$")


class UnknownQuery(ValueError):
    """No named query of that name (one-line message naming the ones there are)."""


@dataclass(frozen=True)
class Param:
    """One bound parameter of a named query; default None means SQL NULL (all)."""

    name: str
    default: str | None
    help: str = ""


@dataclass(frozen=True)
class NamedQuery:
    """A named query: its file's stem, one-line description, parameters and SQL text."""

    name: str
    description: str
    params: tuple[Param, ...]
    sql: str
    notes: str = ""
    path: Path = field(default=Path(), compare=False)
    options: tuple[Param, ...] = ()  # read by the query's Python finisher, never bound in SQL

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.options)

    @property
    def finisher(self) -> Callable[[pa.Table, Mapping[str, str | None]], pa.Table] | None:
        """The Python step that finishes this query's rows, or None for a plain SQL query."""
        target = FINISHERS.get(self.name)
        if target is None:
            return None
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)

    def defaults(self) -> dict[str, str | None]:
        return {p.name: p.default for p in self.params}


def _null_or(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value == "" or value.upper() == "NULL" else value


def parse_query_file(path: Path) -> NamedQuery:
    """Read one .sql file and its header; ValueError when the header has no description."""
    sql = path.read_text(encoding="utf-8")
    description = ""
    params: list[Param] = []
    options: list[Param] = []
    notes: list[str] = []
    for line in sql.splitlines():
        line = line.strip()
        if not line.startswith("--"):
            break
        if m := _DESCRIPTION.match(line):
            description = m["text"].strip()
        elif m := _PARAM.match(line):
            params.append(Param(m["name"], _null_or(m["default"]), (m["help"] or "").strip()))
        elif m := _OPTION.match(line):
            options.append(Param(m["name"], _null_or(m["default"]), (m["help"] or "").strip()))
        else:
            notes.append(line.lstrip("-").strip())
    if not description:
        raise ValueError(f"{path.name}: no '-- description:' line in the header")
    return NamedQuery(path.stem, description, tuple(params), sql, " ".join(notes).strip(), path,
                      tuple(options))


@lru_cache(maxsize=1)
def _load(query_dir: Path) -> dict[str, NamedQuery]:
    return {q.name: q for q in (parse_query_file(p) for p in sorted(query_dir.glob("*.sql")))}


def list_named() -> list[NamedQuery]:
    """Every named query, sorted by name."""
    return list(_load(QUERY_DIR).values())


def get_named(name: str) -> NamedQuery:
    """The named query `name`; UnknownQuery when there is none."""
    queries = _load(QUERY_DIR)
    if name not in queries:
        raise UnknownQuery(f"unknown named query {name!r}; known: {', '.join(queries)}")
    return queries[name]


def bind_params(query: NamedQuery, params: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The query's defaults overridden by `params`; ValueError for a parameter it does not take.
    Options (see bind_options) are accepted here and left out of the result."""
    params = {k: v for k, v in (params or {}).items() if k not in query.option_names}
    unknown = sorted(set(params) - set(query.param_names))
    if unknown:
        known = ", ".join((*query.param_names, *query.option_names)) or "none"
        raise ValueError(f"named query {query.name!r} has no parameter {', '.join(unknown)}; "
                         f"its parameters: {known}")
    bound = query.defaults()
    for key, value in params.items():
        bound[key] = _null_or(value)
    return bound


def bind_options(query: NamedQuery, params: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The query's option defaults overridden by the options among `params`."""
    bound = {p.name: p.default for p in query.options}
    for key, value in (params or {}).items():
        if key in bound:
            bound[key] = _null_or(value)
    return bound


def _relation(cur: duckdb.DuckDBPyConnection, name: str,
              params: Mapping[str, str | None] | None) -> duckdb.DuckDBPyRelation:
    query = get_named(name)
    bound = bind_params(query, params)
    relation = cur.sql(query.sql, params=bound or None)
    assert relation is not None, f"named query {name} is not a SELECT"
    return relation


def run_named_stage(con: duckdb.DuckDBPyConnection, name: str,
                    params: Mapping[str, str | None] | None = None) -> pa.Table:
    """The rows of the named query's SQL alone, before any Python finisher (Arrow)."""
    cur = con.cursor()
    try:
        return relation_arrow(_relation(cur, name, params))
    finally:
        cur.close()


def finish_named(query: NamedQuery, stage: pa.Table,
                 params: Mapping[str, str | None] | None) -> pa.Table:
    """The query's result from the rows of its SQL: its Python finisher applied with its
    options, or the rows as they are. For callers that run the SQL on a cursor of their own
    (under analysis.db.time_limit: `vitsweep query`, the dashboard)."""
    if query.finisher is None:
        return stage
    return query.finisher(stage, bind_options(query, params))


def _finished(con: duckdb.DuckDBPyConnection, query: NamedQuery,
              params: Mapping[str, str | None] | None) -> pa.Table:
    assert query.finisher is not None
    bind_params(query, params)  # an unknown parameter: ValueError before any work
    return finish_named(query, run_named_stage(con, query.name, params), params)


def run_named(con: duckdb.DuckDBPyConnection, name: str,
              params: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Run the named query with bound parameters on a connection from analysis.db.open_runs."""
    query = get_named(name)
    if query.finisher is not None:
        return _finished(con, query, params).to_pandas()
    cur = con.cursor()
    try:
        return _relation(cur, name, params).df()
    finally:
        cur.close()


def run_named_arrow(con: duckdb.DuckDBPyConnection, name: str,
                    params: Mapping[str, str | None] | None = None) -> pa.Table:
    """As run_named, as an Arrow table (keeps binary and list columns exactly)."""
    query = get_named(name)
    if query.finisher is not None:
        return _finished(con, query, params)
    return run_named_stage(con, name, params)


def relation_arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as an Arrow table (DuckDB 1.x spells it `arrow()`, 2.x `to_arrow_table()`)."""
    fetch = getattr(relation, "to_arrow_table", None) or getattr(relation, "arrow")
    table = fetch()
    return table if isinstance(table, pa.Table) else table.read_all()


def list_text(fmt: str) -> str:
    """The named queries as `vitsweep query --list` prints them: text (fmt table) or JSON."""
    queries = list_named()
    if fmt == "json":
        return json.dumps([{"name": q.name, "description": q.description, "notes": q.notes,
                            "params": [{"name": p.name, "default": p.default, "help": p.help}
                                       for p in q.params]} for q in queries], indent=1) + "\n"
    lines = []
    for q in queries:
        lines.append(f"{q.name}\n    {q.description}")
        for p in q.params:
            default = "NULL" if p.default is None else p.default
            lines.append(f"    --param {p.name}={default}    {p.help}".rstrip())
    return "\n".join(lines) + "\n"


STATEMENT_GROUPS = ("report", "dashboard", "demo")  # folders of analysis/queries/ that hold statements


@lru_cache(maxsize=None)
def statement(name: str) -> str:
    """The SQL text of one internal statement, `analysis/queries/<group>/<stem>.sql` for a name
    `group/stem` (the report's and the dashboard's reads: not named queries, so neither listed
    nor offered to users; parameters bound by the caller). KeyError for an unknown name."""
    group, _, stem = name.partition("/")
    path = QUERY_DIR / group / f"{stem}.sql"
    if group not in STATEMENT_GROUPS or not stem.isidentifier() or not path.is_file():
        raise KeyError(f"no SQL statement {name!r} in {QUERY_DIR}")
    return path.read_text(encoding="utf-8")
