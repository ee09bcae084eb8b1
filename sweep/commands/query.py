"""`vitsweep query`: ask a run's results a question in SQL or by a named query.

    vitsweep query RUN [RUN ...] SQL            # one read-only statement over the views
    vitsweep query RUN --named equivalence [--param model=vit_b ...]
    vitsweep query --list
    ... --format table|csv|json|parquet [--output FILE [--force]]
    ... --timeout 60 --memory-limit 1GB

The runs are opened with analysis.db.open_runs (views match, perturb, lipschitz, units, pairs,
images, labels, settings; sandboxed to the run directories). A bad query, a missing run or an unknown named query
is one line on stderr and exit status 2. A query still running after `--timeout` seconds is
interrupted by DuckDB ("Query stopped after N s", exit status 2; 0 or inf: no limit); DuckDB's memory
is capped at `--memory-limit` (analysis.db.Limits, the settings every analysis connection uses). With
`--output FILE` in CSV or Parquet, DuckDB writes the file itself (analysis.export: the same bytes
as the Python writer) to a new file beside FILE, renamed to FILE once the query has succeeded, so
a stopped or failed query leaves FILE as it was. Never imports torch or Ray.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.errors import UserError, int_at_least, one_line
from sweep.params import parse_params

if TYPE_CHECKING:
    from analysis.db import Limits

MAX_TIMEOUT_S = 1e9  # about 31 years; a timer cannot wait much longer (threading.TIMEOUT_MAX)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", metavar="RUN [RUN ...] [SQL]",
                        help="run directories, then the SQL query (unless --named or --list)")
    parser.add_argument("--named", metavar="NAME", help="run the named query NAME (see --list)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a named query's parameter (repeatable); VALUE NULL means all")
    parser.add_argument("--list", action="store_true", help="list the named queries and exit")
    parser.add_argument("--format", default="table", choices=("table", "csv", "json", "parquet"),
                        help="output format (parquet needs --output)")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="write the result to FILE instead of stdout")
    parser.add_argument("--force", action="store_true", help="replace --output FILE when it exists")
    parser.add_argument("--limit", type=int_at_least(0), metavar="N", help="at most N rows")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="stop the query after S seconds (default 60; 0 or inf: no limit)")
    parser.add_argument("--memory-limit", metavar="SIZE",
                        help="DuckDB memory limit, e.g. 512MB or 2GB (default 1GB, or "
                             "$VITSWEEP_MEMORY_LIMIT)")


def run(args: argparse.Namespace) -> int:
    from analysis.output import check_output, staging_file

    check_output(args.output, args.force)
    if args.list:
        if args.format not in ("table", "json"):
            raise UserError("--list prints as table or json")
        from analysis.named import list_text
        text = list_text(args.format)
        args.output.write_text(text, encoding="utf-8") if args.output else sys.stdout.write(text)
        return 0

    from analysis.db import Limits

    positional: list[str] = list(args.args)
    if args.named:
        runs, sql = positional, None
    else:
        if args.param:
            raise UserError("--param applies to --named queries only")
        if len(positional) < 2:
            raise UserError('give one or more run directories and a SQL query, or --named NAME')
        if Path(positional[-1]).expanduser().exists():
            raise UserError(
                f"the SQL query is missing: {positional[-1]} is a path (a run), so give the query after the runs"
            )
        runs, sql = positional[:-1], positional[-1]
    if not runs:
        raise UserError("give at least one run directory")
    if args.format == "parquet" and args.output is None:
        raise UserError("--format parquet needs --output FILE")
    if args.timeout < 0:
        raise UserError("--timeout must be 0 (no limit) or more seconds")
    if not (args.timeout <= MAX_TIMEOUT_S or args.timeout == math.inf):  # nan too
        raise UserError(f"--timeout: at most {MAX_TIMEOUT_S:.0e} seconds (0 or inf: no limit), got {args.timeout}")
    args.timeout = 0.0 if args.timeout == math.inf else args.timeout
    limits = Limits() if args.memory_limit is None else Limits(memory_limit=args.memory_limit)
    staging = staging_file(args.output) if args.output is not None else None
    try:
        _answer(args, runs, sql, limits, staging)
    finally:
        if staging is not None:
            staging.unlink(missing_ok=True)
    return 0


def _answer(args: argparse.Namespace, runs: list[str], sql: str | None, limits: Limits,
            staging: Path | None) -> None:
    """Run the query and write its result: to `staging` (then renamed to --output) when given,
    by DuckDB's COPY where analysis.export covers the format and the columns, else through
    analysis.output; to stdout without --output."""
    import duckdb

    from analysis.db import QueryStopped, RunNotFound, open_runs, time_limit
    from analysis.export import copy_result
    from analysis.guard import QueryRefused, read_only_statement
    from analysis.named import UnknownQuery, bind_params, finish_named, get_named, relation_arrow
    from analysis.output import publish, write_result

    try:
        con = open_runs(runs, limits=limits, writable=[staging] if staging else [])
    except RunNotFound as err:
        raise UserError(str(err)) from None
    except duckdb.Error as err:  # a memory limit DuckDB cannot read
        raise UserError(f"--memory-limit: {one_line(err)}") from None
    # COPY writes every row: used without --limit, for a query SQL alone answers
    copy_ok = staging is not None and args.limit is None
    table = None
    try:
        with time_limit(con, args.timeout) as cur:
            if getattr(args, "ctrl_c", None) is not None:  # Ctrl-C interrupts DuckDB as --timeout does
                args.ctrl_c.hooks.append(cur.interrupt)
            if args.named:
                query = get_named(args.named)
                params = parse_params(args.param, as_text=True)
                bound = bind_params(query, params)
                if not (copy_ok and query.finisher is None
                        and copy_result(cur, query.sql, bound, args.format, staging)):
                    # finished in Python where the query has a finisher (claims: bootstrap and verdicts)
                    table = finish_named(query, relation_arrow(cur.sql(query.sql, params=bound or None)), params)
            else:
                statement = read_only_statement(con, sql)
                plain = con.extract_statements(statement)[0].type == duckdb.StatementType.SELECT
                if not (copy_ok and plain and copy_result(cur, statement, None, args.format, staging)):
                    table = relation_arrow(cur.sql(statement))
    except (QueryStopped, QueryRefused, UnknownQuery, ValueError) as err:
        raise UserError(str(err)) from None
    except duckdb.Error as err:
        raise UserError(one_line(err)) from None
    finally:
        con.close()
    if table is not None:
        if args.limit is not None:
            table = table.slice(0, max(args.limit, 0))
        text = write_result(table, args.format, staging or args.output)
        if text is not None:
            sys.stdout.write(text)
    if staging is not None:
        publish(staging, args.output)
