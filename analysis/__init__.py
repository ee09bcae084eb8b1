"""Read-only analysis of vitsweep runs: DuckDB views over the Parquet results, named queries,
a guarded SQL console and the findings report. Never imports torch or Ray.

    from analysis import open_runs, run_named, list_named, run_readonly
    con = open_runs(["runs/demo"])                 # views: match perturb lipschitz units pairs images
                                                    # + settings (one row per probe setting)
    run_named(con, "equivalence", {"model": "vit_base_patch16_224"})   # one row per setting
    run_readonly(con, user_sql)                     # untrusted SQL: QueryRefused unless a plain SELECT

Modules: db (views), rundirs (run directories and their files), named (queries/*.sql and the
report's and dashboard's statements in queries/report/ and queries/dashboard/), guard (the one
SQL guard: the console and `vitsweep query`), output (table/csv/json/parquet and the --output
file), export (CSV/Parquet files written by DuckDB's COPY, the same bytes as output's), claims
(verdicts), report (a package: the findings report in HTML, Markdown and JSON, with its figures and gallery).
The report modules (matplotlib, jinja2) are not imported here.
"""

from analysis.db import RunNotFound, open_runs, read_manifest, read_progress, read_spec_text
from analysis.guard import QueryRefused, run_readonly
from analysis.named import NamedQuery, UnknownQuery, list_named, run_named, run_named_arrow

__all__ = [
    "NamedQuery",
    "QueryRefused",
    "RunNotFound",
    "UnknownQuery",
    "list_named",
    "open_runs",
    "read_manifest",
    "read_progress",
    "read_spec_text",
    "run_named",
    "run_named_arrow",
    "run_readonly",
]
