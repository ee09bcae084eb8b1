"""The findings report: renders, is self-contained, its images decode, its numbers are the
named queries' numbers, and sections without data say so."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.db import open_runs
from analysis.named import run_named
from analysis.report import fmt, write_report
from tests.support.runs import (
    LIPSCHITZ_SETTING_TEXT,
    MATCH_SETTING_TEXT,
    PERTURB_SETTING_TEXT,
    config_hash,
    fixture_images,
    make_fixture_run,
)
from sweep.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
# Images of the fixture report. vit_b: 4 figures (match, eps, lipschitz families, nonlinearity)
# and 2 gallery rows x 4; vit_a has a second match setting: one more match figure and one more
# gallery block of 1 row x 4. At the top, a forest plot per claim (5).
N_IMAGES = 2 * (4 + 2 * 4) + (1 + 4) + 5


def _cfg_slug(model: str, setting: str = "default") -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", config_hash(model, "match", setting)).strip("_")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def report(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report([run], tmp_path_factory.mktemp("report"))


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_html_is_self_contained_and_its_images_decode(report: dict[str, Path]) -> None:
    html = report["html"].read_text()
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', html), "only data URIs and anchors"
    images = DATA_URI.findall(html)
    assert len(images) == N_IMAGES
    assert len(re.findall(r"<img ", html)) == len(images)
    for b64 in images:
        assert _decode(base64.b64decode(b64)).size > 0


def test_gallery_amplified_difference(report: dict[str, Path]) -> None:
    out = report["html"].parent
    for setting, delta in (("default", 2), ("paper", 5)):
        stem = f"gallery-vit_a_random_0_pre_logits-{_cfg_slug('vit_a', setting)}-0"
        src = _decode((out / f"{stem}-src.png").read_bytes())
        assert np.array_equal(src, fixture_images(0, delta)["src"])
        adv = _decode((out / f"{stem}-adv.png").read_bytes())
        assert np.array_equal(adv, fixture_images(0, delta)["adv"])
        diff = _decode((out / f"{stem}-diff.png").read_bytes())
        # adv = src + delta everywhere: |adv - src| = delta, amplified to the full 255
        assert diff.shape == src.shape and (diff == 255).all()
    html = report["html"].read_text()
    assert "largest change 2/255" in html and "largest change 5/255" in html


def test_markdown_twin_references_existing_pngs(report: dict[str, Path]) -> None:
    md = report["md"].read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) == N_IMAGES == len(set(refs))
    for ref in refs:
        assert (report["md"].parent / ref).is_file(), ref
        _decode((report["md"].parent / ref).read_bytes())
    # claims 1 and 4 once per match setting: vit_a twice, vit_b once
    counts = {"1. Equivalence": 3, "2. Normal spaces": 2, "3. Lipschitz": 2, "4. Overgeneralisation": 3}
    for heading, count in counts.items():
        assert md.count(f"### {heading}") == count, heading


def test_numbers_equal_the_named_queries(run: Path, report: dict[str, Path]) -> None:
    numbers = json.loads(report["json"].read_text())
    html, md = report["html"].read_text(), report["md"].read_text()
    con = open_runs([run])
    sections = {s["model"]: s for s in numbers["sections"]}
    assert set(sections) == {"vit_a", "vit_b"}
    for model, section in sections.items():
        assert section["weights"] == "random:0" and section["embed"] == "pre_logits"
        for name in ("equivalence", "invisibility", "lipschitz", "overgeneralisation"):
            want = run_named(con, name, {"model": model}).to_dict("records")
            assert [r["config_hash"] for r in section[name]] == [r["config_hash"] for r in want]
            for got_row, row in zip(section[name], want):
                for key, value in got_row.items():
                    if isinstance(value, float):
                        assert row[key] == pytest.approx(value), (model, name, key)
                    elif value is None and isinstance(row[key], float):  # JSON null is NaN (zs_* of a run without text:)
                        assert row[key] != row[key], (model, name, key)
                    else:
                        assert row[key] == value, (model, name, key)
        normal = run_named(con, "normal_space", {"model": model})
        assert [r["median_disp_over_pair"] for r in section["normal_space"]] == pytest.approx(
            normal["median_disp_over_pair"].tolist())
        stated: list[str] = []
        for eq in section["equivalence"]:
            stated.append(f"({fmt(eq['success_rate'], 'pct')} success rate)")
            stated.append(f"Setting: <code>{eq['setting']}</code> (config {eq['config_hash']})")
        for inv in section["invisibility"]:
            stated.append(f"median PSNR {fmt(inv['median_psnr'])} dB")
        for og in section["overgeneralisation"]:
            stated.append(fmt(og["head_target_rate_success"], "pct"))
        for lip in section["lipschitz"]:
            stated += [fmt(lip["median_sigma1_over_random"], "x"), fmt(lip["median_top_over_null"], "x")]
        for text in stated:
            assert text in html and text.replace("<code>", "`").replace("</code>", "`") in md, text
    # the known answers, written out: vit_a's two match settings are stated apart, in order
    vit_a = html[html.index('id="vit_a'):html.index('id="vit_b')]
    default, paper = MATCH_SETTING_TEXT["default"], MATCH_SETTING_TEXT["paper"]
    assert vit_a.index(default) < vit_a.index("75.0% success rate") < vit_a.index(paper) \
        < vit_a.index("50.0% success rate")
    assert "87.5%" not in html  # 7 of 8: the two settings pooled
    assert "2 of 4 matches" in vit_a and "median of 3,000 steps" in vit_a
    assert "median PSNR 43.5 dB" in vit_a  # paper: successes p0, p2 (45, 42)
    assert vit_a.count(PERTURB_SETTING_TEXT) == 1 and vit_a.count(LIPSCHITZ_SETTING_TEXT) == 1
    vit_b = html[html.index('id="vit_b'):]
    assert paper not in vit_b and "75.0% success rate" in vit_b
    assert "33.3×" in html and "66.7×" in html  # sigma1 / median random: 100/3 and 200/3
    assert "median PSNR 35 dB" in html and "median PSNR 36 dB" in html
    # claim 2, worked out from the fixture: at the largest ε pairs 0-2 move 0.1·8·(1, 1.1, 1.2)·(1 + m)
    # (L∞) and 1.0·(1, 1.1, 1.2)·(1 + m) (L2) times their distance, a random change 1/20 of that
    for model, m in (("vit_a", 0), ("vit_b", 1)):
        part = html[html.index(f'id="{model}'):] if model == "vit_b" else vit_a
        for name, eps, median, random in (("L∞", "8/255", 0.88, 0.044), ("L2", "1", 1.1, 0.055)):
            # the largest ε in a sentence of its own, labelled, after the verdict's (smallest) ε
            text = (f"At the largest {name} ε = {eps}: a median {median * (1 + m):.3g} times the "
                    f"distance, random {random * (1 + m):.3g} (median ratio 20×)")
            assert text in part and text in md, (model, text)
            smallest = part.index(f"At the smallest {name} ε = ")
            assert smallest < part.index(text) and "(the ε the verdict uses)" in part[smallest:]
    # claim 4, worked out from the fixture (source and target labels always differ):
    # default: successes p0-p2; head follows the target on p0, p1 (p3 too); k-NN on p0, p2
    # paper: successes p0, p2; head follows the target on p0, p2; k-NN on p2 (p3 too)
    a_default, a_paper = vit_a.split("4. Overgeneralisation")[1:]
    b_default = vit_b.split("4. Overgeneralisation")[1]
    assert default in a_default and paper in a_paper and default in b_default
    for setting_part, labeller, n, target, source, target_all in (
            (a_default, "the classifier head", 3, "66.7%", "33.3%", "75.0%"),
            (a_default, "k-NN", 3, "66.7%", "33.3%", "50.0%"),
            (a_paper, "the classifier head", 2, "100.0%", "0.0%", "50.0%"),
            (a_paper, "k-NN", 2, "50.0%", "50.0%", "50.0%"),
            (b_default, "the classifier head", 3, "66.7%", "33.3%", "75.0%"),
            (b_default, "k-NN", 3, "66.7%", "33.3%", "50.0%")):
        text = (f"Of the {n} successful matches whose source and target {labeller} labels differently, "
                f"{target} are labelled as the target and {source} keep the source")
        assert text in setting_part and text in md, text
        assert f"({target_all} as the target among all such ok matches)" in setting_part[setting_part.index(text):]


def test_failures_are_listed(report: dict[str, Path]) -> None:
    html = report["html"].read_text()
    assert "Failures (5)" in html and "worker died 3 times" in html


def test_sections_without_data_say_so(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "runs", models=("vit_a",), only=("match",))
    paths = write_report([run], tmp_path / "out")
    html, md = paths["html"].read_text(), paths["md"].read_text()
    for text in (html, md):
        assert "No perturb rows" in text
        assert "No lipschitz rows" in text
        assert "No gallery images stored" in text
        assert "75.0% success rate" in text and "50.0% success rate" in text
    # the match distributions of each setting, and a forest plot per match claim (3)
    assert len(DATA_URI.findall(html)) == 2 + 3


def test_partial_and_empty_runs_render(tmp_path: Path) -> None:
    partial = make_fixture_run(tmp_path / "p", models=("vit_a",), complete=False)
    html = write_report([partial], tmp_path / "out-p")["html"].read_text()
    assert "running" in html and "No lipschitz rows" in html
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "spec.yaml").write_text("name: empty\n")
    html = write_report([empty], tmp_path / "out-e")["html"].read_text()
    assert "No probe results in these runs" in html


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_fixture_run(tmp_path / "runs", only=("match", "images"))
    code = (
        "import sys; from sweep.cli import main; "
        f"rc = main(['report', {str(run)!r}, '--out', {str(tmp_path / 'cli')!r}, '--gallery', '1']); "
        "bad = [m for m in ('torch', 'ray', 'timm') if m in sys.modules]; "
        "print('IMPORTED', bad, file=sys.stderr); sys.exit(rc or (3 if bad else 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stderr
    assert (tmp_path / "cli" / "report.html").is_file()
    # per model and match setting: the match figure and one gallery row of four images; a
    # forest plot per match claim
    assert len(DATA_URI.findall((tmp_path / "cli" / "report.html").read_text())) == 3 * (1 + 4) + 3
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_verdict_beside_every_claim(run: Path, report: dict[str, Path]) -> None:
    """Each claim heading carries its verdicts (claim 1: equivalence and invisibility); the
    verdicts are the named query `claims`' rows; nothing claims the images look unchanged."""
    html, md = report["html"].read_text(), report["md"].read_text()
    numbers = json.loads(report["json"].read_text())
    table = run_named(open_runs([run]), "claims", {}).to_dict("records")
    assert [(c["config_hash"], c["claim"], c["verdict"], c["n"]) for c in numbers["claims"]] == \
        [(c["config_hash"], c["claim"], c["verdict"], c["n"]) for c in table]
    # 3 match settings x (equivalence, invisibility, overgeneralisation) + 2 perturb + 2 lipschitz
    assert len(numbers["claims"]) == 13 and {c["verdict"] for c in numbers["claims"]} == {"inconclusive"}
    assert html.count('<span class="verdict v-inconclusive">') == 13
    assert md.count("**Verdict:**") == 3 + 2 + 2 + 3  # one line per claim block with data
    assert "equivalence **inconclusive** · invisibility **inconclusive**" in md
    for text in (html, md):
        assert "look like their sources" not in text and "pass as their sources" not in text
        assert "below the minimum of 30" in text
        # top/null at the finite step h = 1 (l_fd: 50 and 100), never an "exceeds" on ‖J v‖
        assert "exceeds" not in text and "zero by construction" in text
        assert "At a finite step h = 1 (L2 pixel units)" in text
    assert numbers["criteria"]["invisibility"]["min_median_psnr"] == 30.0


def test_headline_section_with_its_curves(tmp_path: Path) -> None:
    """A run with probe `equivalence`: section 5 states both verdicts and draws the curves, whose
    percentiles are the fixture's hand-set values (every successful match's target curve is
    0, .01, .02, .03, .05 over 5 points; every walk stays at 0.01 for 20 steps)."""
    from analysis.report.model import _read_data

    run = make_fixture_run(tmp_path, geometry=True)
    con = open_runs([run], snapshot=True)
    curves = _read_data(con, 0).geometry_curves
    cfg = config_hash("vit_a", "equivalence", "default")
    target = curves[cfg][curves[cfg]["curve"] == "target"].sort_values("i")
    assert target["p50"].tolist() == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.05])
    assert set(target["n"]) == {3} and set(target["k"]) == {5}  # the three successful matches
    walk = curves[cfg][curves[cfg]["curve"] == "walk"]
    assert len(walk) == 20 and set(walk["n"]) == {4} and walk["p90"].tolist() == pytest.approx([0.01] * 20)
    paths = write_report([run], tmp_path / "report")
    html = paths["html"].read_text()
    assert "5. The headline: are equivalence sets large and piecewise linear?" in html
    assert "Verdict on large_equivalence" in html and "Verdict on piecewise_linear" in html
    assert len(re.findall(r"\(fig-[^)\s]*-geometry\.png\)", paths["md"].read_text())) == 2  # a figure per model
    numbers = json.loads(paths["json"].read_text())
    assert {"large_equivalence", "piecewise_linear"} <= {c["claim"] for c in numbers["claims"]}
