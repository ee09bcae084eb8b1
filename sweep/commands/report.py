"""`vitsweep report`: write the findings report of one or more runs.

    vitsweep report RUN [RUN ...] --out DIR [--gallery N] [--criteria FILE]

DIR receives report.html (self-contained: open it in a browser, no server), report.md with its
PNG figures next to it, and report.json (the query rows behind every number, the criteria and
the verdict on every claim). --criteria names a YAML file with the verdict criteria to change
(analysis/criteria.yaml holds the defaults); it is checked before any run is read. A missing run
or a bad criteria file is one line on stderr and exit status 2. A DIR that already
holds a report gets the new one: its old figures (`fig-*.png`, `gallery-*.png`) that the new
report does not write are removed, other files are left alone. Never imports torch or Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep.errors import UserError, int_at_least, one_line

_FIGURES = ("fig-*.png", "gallery-*.png")  # the names analysis.report gives its PNGs


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (their results are unioned)")
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                        help="folder for report.html, report.md and the figures")
    parser.add_argument("--gallery", type=int_at_least(0), default=6, metavar="N",
                        help="at most N matched triples per model and weights (default 6)")
    parser.add_argument("--criteria", type=Path, metavar="FILE",
                        help="YAML file with the verdict criteria to change (defaults: "
                             "analysis/criteria.yaml)")


def run(args: argparse.Namespace) -> int:
    import duckdb

    from analysis.claims import CriteriaError, load_criteria
    from analysis.db import RunNotFound
    from analysis.report import write_report

    if args.gallery < 0:
        raise UserError("--gallery must be 0 or more")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out is not a directory: {args.out}")
    old_figures = {p: p.stat().st_mtime_ns for p in _old_figures(args.out)}
    try:
        criteria = load_criteria(args.criteria)
    except CriteriaError as err:
        raise UserError(str(err)) from None
    try:
        paths = write_report(args.runs, args.out, gallery_limit=args.gallery, criteria=criteria,
                             criteria_source=str(args.criteria) if args.criteria else None)
    except RunNotFound as err:
        raise UserError(str(err)) from None
    except duckdb.Error as err:
        raise UserError(one_line(err)) from None
    for figure, mtime_ns in old_figures.items():  # left over from the previous report: not rewritten now
        if figure.is_file() and figure.stat().st_mtime_ns == mtime_ns:
            figure.unlink()
    print(f"wrote {paths['html']} and {paths['md']}")
    return 0


def _old_figures(out: Path) -> list[Path]:
    """The figures of a report already in `out` (only where a report.json says it is one)."""
    if not (out / "report.json").is_file():
        return []
    return [p for pattern in _FIGURES for p in out.glob(pattern)]
