"""Verdicts at a glance (analysis.glance.py): short setting labels, the model × claim grid
and the forest-plot points are views of the `claims` rows; the report opens with them (HTML and
Markdown), writes a forest plot per claim and leaves report.json as it was."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from analysis import glance
from analysis.claims import claims_records, load_criteria
from analysis.db import open_runs
from analysis.report import figures, write_report
from tests.support.claim_runs import make_claims_run
from tests.support.runs import MATCH_SETTING_TEXT, make_fixture_run


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("glance"))


@pytest.fixture(scope="module")
def claims(fixture_run: Path) -> list[dict[str, Any]]:
    con = open_runs([fixture_run], snapshot=True)
    try:
        return claims_records(con, load_criteria())
    finally:
        con.close()


def _row(probe: str, config_hash: str, params: dict[str, Any], model: str = "m",
         claim: str = "equivalence", **extra: Any) -> dict[str, Any]:
    return {"model": model, "weights": "w", "embed": "e", "probe": probe, "claim": claim,
            "config_hash": config_hash, "params": json.dumps(params, sort_keys=True),
            "setting": "?", "verdict": "supported", "statistic": "success_rate", "n": 50,
            "estimate": 0.95, "ci_low": 0.92, "ci_high": 0.97, "threshold": 0.9, **extra}


def test_short_labels_name_the_parameters_that_tell_settings_apart() -> None:
    rows = [
        _row("match", "a", {"lr": 0.01, "max_steps": 1000, "optimizer": "adam", "preset": "default"}),
        _row("match", "b", {"lr": 0.08, "max_steps": 12000, "optimizer": "gd", "preset": "paper"}),
        _row("match", "a2", {"lr": 0.01, "max_steps": 1000, "optimizer": "adam", "preset": "default"},
             model="m2"),
        _row("perturb", "p1", {"norm": "linf", "steps": 10}, claim="normal_space"),
        _row("perturb", "p2", {"norm": "linf", "steps": 40}, claim="normal_space"),
        _row("lipschitz", "l", {"h": [0.01, 0.1], "top_k": 2}, claim="lipschitz"),
    ]
    by_hash, legend = glance.settings_of(rows)
    assert {h: s.label for h, s in by_hash.items()} == {
        "a": "preset=default", "a2": "preset=default", "b": "preset=paper",
        "p1": "steps=10", "p2": "steps=40", "l": ""}  # one lipschitz setting: no label
    assert by_hash["a"] is by_hash["a2"] and by_hash["a"].models == ["m", "m2"]
    assert [s.full for s in legend] == [
        "lr=0.01, max_steps=1000, optimizer=adam, preset=default",
        "lr=0.08, max_steps=12000, optimizer=gd, preset=paper",
        "norm=linf, steps=10", "norm=linf, steps=40", "h=[0.01,0.1], top_k=2"]


def test_labels_too_long_become_numbers_with_a_legend() -> None:
    long = [{"note": "x" * 40 + str(i), "k": i % 2} for i in range(3)]  # needs note: too long
    rows = [_row("match", f"c{i}", p) for i, p in enumerate(long)]
    by_hash, legend = glance.settings_of(rows)
    assert [by_hash[f"c{i}"].label for i in range(3)] == ["s1", "s2", "s3"]
    assert [s.full for s in legend] == [f"k={i % 2}, note={'x' * 40}{i}" for i in range(3)]


def test_grid_sub_rows_per_setting_and_spanning_cells(claims: list[dict[str, Any]]) -> None:
    """The fixture: vit_a has two match settings, vit_b one; one perturb and one lipschitz
    setting each. vit_a's group has two sub-rows; its perturb and lipschitz cells span both."""
    grid = glance.verdict_grid(claims)
    assert grid.claims == ["equivalence", "invisibility", "normal_space", "lipschitz",
                           "overgeneralisation"]
    assert [(r.model, r.first, r.span) for r in grid.rows] == [
        ("vit_a", True, 2), ("vit_a", False, 2), ("vit_b", True, 1)]
    first, second, vit_b = grid.rows
    spans = {c.claim: c.rowspan for c in first.cells if c is not None}
    assert spans == {"equivalence": 1, "invisibility": 1, "normal_space": 2, "lipschitz": 2,
                     "overgeneralisation": 1}
    assert [c is None for c in second.cells] == [False, False, True, True, False]
    assert [first.cells[0].label, second.cells[0].label] == ["preset=default", "preset=paper"]
    assert all(c.label == "" for c in vit_b.cells if c and c.claim in ("normal_space", "lipschitz"))
    # every cell is a claims row: its verdict; the full setting only in the tooltip
    by_key = {(r["model"], r["claim"], glance.settings_of(claims)[0][r["config_hash"]].label): r
              for r in claims}
    for row in grid.rows:
        for cell in row.cells:
            if cell is not None:
                assert cell.verdict == by_key[(row.model, cell.claim, cell.label)]["verdict"]
                assert MATCH_SETTING_TEXT["paper"] not in cell.estimate + cell.label
    assert MATCH_SETTING_TEXT["paper"].replace("tau=0.0001", "tau=0.0001") in second.cells[0].title
    assert grid.counts == {"inconclusive": 13} and grid.summary == "13 verdicts: 13 inconclusive"


def test_grid_html_has_no_long_setting_text(claims: list[dict[str, Any]]) -> None:
    html = glance.grid_html(claims)
    cells = re.sub(r'title="[^"]*"', "", html)  # tooltips hold the full text
    assert "preset=paper" in cells and "max_steps=12000" not in cells
    assert html.count('class="vg-badge vg-inconclusive"') == 13
    assert 'rowspan="2"' in html and "max_steps=12000" in html  # in a tooltip


def test_forest_points_are_the_claims_checks(claims: list[dict[str, Any]]) -> None:
    points = glance.forest_points(claims)
    expected = [(r["config_hash"], r["claim"], c["statistic"], c["estimate"], c["ci_low"],
                 c["ci_high"], c["threshold"]) for r in claims for c in r["checks"]]
    assert [(p["config_hash"], p["claim"], p["statistic"], p["estimate"], p["ci_low"], p["ci_high"],
             p["threshold"]) for p in points] == expected
    assert {p["statistic"] for p in points if p["log"]} == {
        "median_disp_over_pair", "median_over_random", "median_anisotropy", "median_top_over_null_fd"}
    # the control marker is the row's own control_estimate (the run has a Gaussian control beside vit_v)
    assert [p["control"] for p in points] == [c.get("control_estimate") for r in claims for c in r["checks"]]


def test_forest_control_marker_from_control_estimate() -> None:
    rows = [_row("match", "a", {"lr": 1}, control_estimate=0.12),
            _row("match", "b", {"lr": 2}, control_estimate=None)]
    points = glance.forest_points(rows)
    assert [p["control"] for p in points] == [0.12, None]
    assert [p["row"] for p in points] == ["m · lr=1", "m · lr=2"]


def _png_size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return img.size


def test_forest_figure_per_claim(claims: list[dict[str, Any]]) -> None:
    points = glance.forest_points(claims)
    for claim in ("equivalence", "invisibility", "normal_space", "lipschitz", "overgeneralisation"):
        width, height = _png_size(figures.forest(points, claim))
        assert width <= 1100 and height > 80, claim
    assert figures.forest(points, "no such claim") is None
    # a ratio with zero and infinite values still draws (they are left off the log axis)
    odd = [dict(p, estimate=v, ci_low=0.0, ci_high=math.inf, control=c)
           for p, v, c in zip([p for p in points if p["log"]], (0.0, 5.0, None), (1.5, None, -1.0),
                              strict=False)]
    assert figures.forest(odd, odd[0]["claim"]) is not None


def test_report_opens_with_the_grid_and_forest_plots(fixture_run: Path, tmp_path: Path) -> None:
    paths = write_report([fixture_run], tmp_path / "report")
    html, md = paths["html"].read_text(), paths["md"].read_text()
    numbers = json.loads(paths["json"].read_text())
    assert html.index('id="verdict-grid"') < html.index('id="forest-plots"') < html.index('id="runs"')
    assert md.index("## Verdicts at a glance") < md.index("![Forest plot of") < md.index("## Runs")
    for claim in ("equivalence", "invisibility", "normal_space", "lipschitz", "overgeneralisation"):
        assert (tmp_path / "report" / f"forest-{claim}.png").is_file()
        assert f"](forest-{claim}.png)" in md and f'data-claim="{claim}"><img src="data:image/png' in html
    # the plots' numbers are the claims rows' checks
    shown = re.findall(r'data-config-hash="([^"]+)" data-claim="([^"]+)" data-statistic="([^"]+)" '
                       r'data-estimate="([^"]*)"', html)
    key = repr  # None and floats alike
    assert sorted(((h, c, s, float(e) if e else None) for h, c, s, e in shown), key=key) == sorted(
        ((r["config_hash"], r["claim"], ch["statistic"], ch["estimate"])
         for r in numbers["claims"] for ch in r["checks"]), key=key)
    # the grid and plots add nothing to report.json (caveats and transfer are content of their own)
    assert set(numbers) == {"caveats", "runs", "criteria", "claims", "sections", "transfer"}
    assert "forest" not in paths["json"].read_text()
    # the verdict tables carry short labels; the full parameters are in the settings table
    every = html[html.index('id="verdicts"'):html.index('id="settings"')]
    assert "preset=paper" in every and MATCH_SETTING_TEXT["paper"] not in every
    legend = html[html.index('id="settings"'):]
    assert "lr=0.08, max_steps=12000, optimizer=gd, preset=paper, tau=0.0001" in legend


def test_report_grid_on_a_one_setting_run(tmp_path: Path) -> None:
    run, _ = make_claims_run(tmp_path, "demo")
    paths = write_report([run], tmp_path / "report")
    md = paths["md"].read_text()
    grid = md[md.index("## Verdicts at a glance"):md.index("![Forest plot of")]
    assert "| **vit_v** (random:0 · pre_logits) | **✔ supported** success 100.0% |" in grid
    assert "✘ not supported** PSNR 15.9 dB" in grid and "`" not in grid  # one setting: no labels


def test_the_dashboard_reads_the_grid_without_the_report_package() -> None:
    """analysis.glance (the Models page's import) loads neither matplotlib nor analysis.report."""
    import subprocess
    import sys

    code = ("import sys, analysis.glance; "
            "print(sorted(m for m in ('matplotlib', 'analysis.report') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
