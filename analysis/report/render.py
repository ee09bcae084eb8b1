"""Render the report: HTML and Markdown from the templates (analysis/templates/), report.json
under the one JSON policy (sweep.files: NaN and ±inf become null), and the PNGs beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from analysis.claims import Criteria
from analysis.report.build import build_report
from analysis.report.model import _VERDICT_WORDS, Report
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


def render(report: Report) -> tuple[str, str]:
    """(HTML, Markdown) text of the report."""
    env = _environment()
    return (env.get_template("report.html.j2").render(report=report),
            env.get_template("report.md.j2").render(report=report))


def _numbers_json(report: Report) -> dict[str, Any]:
    """report.json's content: the runs, the criteria, the claims table and every section's
    query rows (made JSON-safe by `dumps_json`: NaN and ±inf become null)."""
    return {"runs": report.runs,
            "criteria": {"source": report.criteria_source, **report.criteria},
            "claims": report.claims,
            "sections": [{"model": s.model, "weights": s.weights, "embed": s.embed,
                          **s.numbers} for s in report.sections]}


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                 gallery_limit: int = 6, criteria: Criteria | None = None,
                 criteria_source: str | None = None) -> dict[str, Path]:
    """Write report.html, report.md (+ its PNGs) and report.json into out_dir; their paths."""
    report = build_report(run_dirs, gallery_limit=gallery_limit, criteria=criteria,
                          criteria_source=criteria_source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html, markdown = render(report)
    for section in report.sections:
        for claim in section.claims:
            for fig in claim.figures:
                (out / fig.filename).write_bytes(fig.png)
        for block in section.gallery:
            for row in block.rows:
                for which, name in row.files.items():
                    (out / name).write_bytes(getattr(row.triple, f"{which}_png"))
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "report.json"}
    paths["html"].write_text(html, encoding="utf-8")
    paths["md"].write_text(markdown, encoding="utf-8")
    paths["json"].write_text(dumps_json(_numbers_json(report), indent=1),
                             encoding="utf-8")
    return paths
