"""The findings report: the paper's four claims, per model, weights and embedding point, with
numbers from the named queries, plots and a gallery of matched triples, and a verdict on every
claim (analysis/claims.py: supported, not_supported or inconclusive under stated criteria).

A probe run with several settings (several `config_hash` values: e.g. match presets paper and
default, several lr) is never pooled: each claim is stated once per setting of its probe (its
own sentences, table and plots, headed by the setting's parameters), and the gallery has one
block per match setting.

    paths = write_report(["runs/demo"], "report/")   # report/report.html, report/report.md, PNGs

`report.html` is self-contained (images as base64 data URIs, inline CSS, no JavaScript);
`report.md` references the PNG files written next to it; `report.json` holds the exact query
rows every stated number comes from (per section, each query's rows: one per setting), the
criteria and the `claims` list (the named query `claims`). A claim with no data says so plainly.
Every sentence about a claim is conditioned on its verdict or only states numbers: nothing says
the matched images look like their sources unless the invisibility verdict is `supported`.

The package: model.py (the numbers: reads and dataclasses), sentences.py (the prose),
build.py (assembling sections and claims), render.py (HTML, Markdown, JSON and PNG files),
figures.py (matplotlib) and gallery.py (image triples).
"""

from analysis.report.build import build_report
from analysis.report.model import Claim, Figure, GalleryBlock, Report, Section, Table, fmt
from analysis.report.render import render, write_report

__all__ = ["Claim", "Figure", "GalleryBlock", "Report", "Section", "Table", "build_report", "fmt",
           "render", "write_report"]
