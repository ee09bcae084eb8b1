"""Render the report: HTML and Markdown from the templates (analysis/templates/), report.json
under the one JSON policy (sweep.files: NaN and ±inf become null), and the PNGs beside them.

The report opens with the verdicts at a glance (`glance`): the model × claim grid and a forest
plot per claim, drawn from `report.claims` alone (analysis/glance.py), so report.json
holds nothing new: the grid and the plots are views of its `claims` rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from analysis.claims import Criteria
from analysis import glance
from analysis.report import figures
from analysis.report.build import build_report
from analysis.report.model import _VERDICT_WORDS, Figure, Report, Table
from sweep.files import dumps_json

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    env.filters["verdict_word"] = lambda v: _VERDICT_WORDS.get(v, v)
    return env


@dataclass
class Forest:
    """One claim's forest plot and the points it draws (from the claims rows)."""

    claim: str
    figure: Figure
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Glance:
    """The top of the report: the grid, a forest plot per claim, every verdict with its short
    setting label, and the settings' legend (every parameter)."""

    grid: glance.Grid
    forests: list[Forest]
    details: Table | None
    settings: Table | None

    @property
    def markdown_grid(self) -> Table:
        return Table(["model", *(c.replace("_", " ") for c in self.grid.claims)],
                     glance.markdown_rows(self.grid))


FOREST_LEGEND = ("Per model and setting, each check's estimate (dot: green supported, red not "
                 "supported, grey inconclusive), its 95% interval (bar), the threshold (dashed "
                 "line) and the negative control's value (×, where the run has one). Ratio "
                 "statistics on a log axis.")
FOREST_CAPTION = "Forest plot of {claim}{log}."


def glance_of(report: Report) -> Glance:
    """The grid, forest plots and tables of `report.claims`."""
    grid = glance.verdict_grid(report.claims)
    points = glance.forest_points(report.claims)
    forests = []
    for claim in grid.claims:
        png = figures.forest(points, claim)
        if png is None:
            continue
        mine = [p for p in points if p["claim"] == claim]
        log = " (log axis)" if any(p["log"] for p in mine) else ""
        caption = FOREST_CAPTION.format(claim=claim.replace("_", " "), log=log)
        forests.append(Forest(claim, Figure(caption, png, f"forest-{claim}.png"), mine))
    columns, details = glance.detail_table(report.claims)
    settings = glance.setting_rows(grid)
    return Glance(grid, forests, Table(columns, details) if details else None,
                  Table(list(glance.SETTING_COLUMNS), settings) if settings else None)


def render(report: Report, at_a_glance: Glance | None = None) -> tuple[str, str]:
    """(HTML, Markdown) text of the report."""
    env = _environment()
    top = at_a_glance or glance_of(report)
    context = {"report": report, "glance": top, "grid": top.grid, "forest_legend": FOREST_LEGEND}
    return (env.get_template("report.html.j2").render(**context),
            env.get_template("report.md.j2").render(**context))


def _numbers_json(report: Report) -> dict[str, Any]:
    """report.json's content: the runs, the criteria, the claims table and every section's
    query rows (made JSON-safe by `dumps_json`: NaN and ±inf become null)."""
    return {"caveats": report.caveats,
            "runs": report.runs,
            "criteria": {"source": report.criteria_source, **report.criteria},
            "claims": report.claims,
            "sections": [{"model": s.model, "weights": s.weights, "embed": s.embed,
                          **s.numbers} for s in report.sections],
            "transfer": None if report.transfer is None else report.transfer.checks}


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                 gallery_limit: int = 6, criteria: Criteria | None = None,
                 criteria_source: str | None = None) -> dict[str, Path]:
    """Write report.html, report.md (+ its PNGs) and report.json into out_dir; their paths."""
    report = build_report(run_dirs, gallery_limit=gallery_limit, criteria=criteria,
                          criteria_source=criteria_source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = glance_of(report)
    html, markdown = render(report, top)
    for forest in top.forests:
        (out / forest.figure.filename).write_bytes(forest.figure.png)
    for section in report.sections:
        for claim in section.claims:
            for fig in claim.figures:
                (out / fig.filename).write_bytes(fig.png)
        for block in section.gallery:
            for row in block.rows:
                for which, name in row.files.items():
                    (out / name).write_bytes(getattr(row.triple, f"{which}_png"))
    if report.transfer is not None:  # issue 23's section (analysis/report/transfer.py)
        (out / report.transfer.figure.filename).write_bytes(report.transfer.figure.png)
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "report.json"}
    paths["html"].write_text(html, encoding="utf-8")
    paths["md"].write_text(markdown, encoding="utf-8")
    paths["json"].write_text(dumps_json(_numbers_json(report), indent=1),
                             encoding="utf-8")
    return paths
