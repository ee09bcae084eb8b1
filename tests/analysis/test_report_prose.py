"""The report's prose and labels (issue 22, points 7 and 9), each on a generated report of a
claims run (tests/support/claim_runs.py: model vit_v, weights random:0, L∞ ε 1/255 and 4/255)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.claims import random_weights_caveat, success_text
from analysis.report import write_report
from analysis.report.build import build_report
from analysis.report.sentences import _labeller_sentence
from tests.support.claim_runs import make_claims_run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("prose")
    run, _ = make_claims_run(root / "runs", "demo")
    paths = write_report([run], root / "out")
    return run, paths["md"].read_text(), paths["html"].read_text()


def test_random_init_report_opens_with_the_caveat(report) -> None:
    run, md, html = report
    built = build_report([run], gallery_limit=0)
    caveat = random_weights_caveat(["random:0"])
    assert caveat and caveat.startswith("These results are for random-init weights (random:0)")
    assert built.caveats[:1] == [caveat]  # the first line of the report (templates: report.caveats)
    section = next(s for s in built.sections if s.model == "vit_v")
    first = next(c for c in section.claims if not c.empty)
    assert first.sentences[0] == caveat  # and the first line of the section
    assert caveat in md and caveat in html
    # above everything else: right under the title, before the verdict grid
    assert html.index(caveat) < html.index('id="glance"') and md.index(caveat) < md.index("## Verdicts at a glance")
    out = run.parent.parent / "out"
    assert json.loads((out / "report.json").read_text())["caveats"] == [caveat]
    assert random_weights_caveat(["pretrained", "file:x.pt"]) is None


def test_no_broken_labeller_noun(report) -> None:
    _, md, html = report
    og = {"n_head_labelled_success": 0, "n_head_same_label_success": 0}
    sentence = _labeller_sentence(og, "head", "the classifier head", "classifier-head")
    assert sentence.startswith("No classifier-head labels on")
    for text in (md, html):
        assert "No the " not in text


def test_normal_space_quotes_the_verdicts_eps_and_labels_its_columns(report) -> None:
    _, md, html = report
    for text in (md, html):
        assert "random δ" not in text
        assert "random disp / pair dist (median draw)" in text
        smallest = text.index("At the smallest L∞ ε = 1/255 (the ε the verdict uses)")
        assert smallest < text.index("At the largest L∞ ε = 4/255")
        # the Gaussian control's value beside the model's ratio
        assert "a Gaussian linear map of these shapes: 2.85×, a control run" in text


def test_equivalence_criterion_names_the_probes_own_success_test(report) -> None:
    _, md, _ = report
    assert "(rel_dist ≤ 0.05 and cos ≥ 0.99)" in md
    assert success_text({"preset": "paper"}) == "(‖f(x) − f(t)‖² < 1e-04 and cos > 0.97)"
    assert success_text('{"preset": "default", "rho": 0.1, "min_cos": 0.95}') == \
        "(rel_dist ≤ 0.1 and cos ≥ 0.95)"
