"""The dashboard's Models page shows each claim's verdicts beside its numbers (Streamlit AppTest
on a run built with known verdicts: tests/support/claim_runs.py, the demo-like mode)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.support.claim_runs import make_claims_run


def test_models_page_shows_a_verdict_beside_each_claim(tmp_path: Path, open_app: Callable[..., AppTest]) -> None:
    run, _ = make_claims_run(tmp_path, "demo")
    at = open_app(run, page="models")
    assert not at.exception, [e.value for e in at.exception]
    expected = {"equivalence": (["✔ supported"], [40], "success_rate"),
                "invisibility": (["✘ not supported"], [40], "median_psnr"),
                "overgeneralisation": (["✔ supported"], [34], "n_success"),
                # the run's Gaussian control first (not supported, as a random matrix must be)
                "normal_space": (["✘ not supported", "✔ supported"], [40, 40], "median_disp_over_pair"),
                "lipschitz": (["✘ not supported", "✔ supported"], [40, 40], "median_sigma1_over_random")}
    # first, every claim's verdict in one table (one setting here: one row per claim)
    summary = [d.value for d in at.dataframe if {"claim", "verdict", "reason"} <= set(d.value.columns)]
    assert len(summary) == 1
    assert {c: (v, n) for c, v, n in zip(summary[0]["claim"], summary[0]["verdict"], summary[0]["n"])} == {
        claim: (verdicts[-1], ns[-1]) for claim, (verdicts, ns, _) in expected.items()}
    # + 2: the run's Gaussian control (control:gaussian:vit_v) has normal_space and lipschitz rows
    assert len(summary[0]) == len(expected) + 2
    assert sorted(summary[0]["model"].unique()) == ["control:gaussian:vit_v", "vit_v"]
    # then each claim, once picked: its verdict rows right before its numbers
    for claim, (verdicts, ns, column) in expected.items():
        at.radio(key="models_question").set_value(claim).run()
        assert not at.exception, [e.value for e in at.exception]
        frames = [d.value for d in at.dataframe]
        at_verdicts = [i for i, f in enumerate(frames)
                       if {"verdict", "reason"} <= set(f.columns) and "claim" not in f.columns]
        assert len(at_verdicts) == 1, claim
        shown = frames[at_verdicts[0]]
        assert (list(shown["verdict"]), shown["n"].tolist()) == (verdicts, ns), claim
        assert column in frames[at_verdicts[0] + 1].columns, claim  # the claim's numbers follow
        markdown = "\n".join(str(m.value) for m in at.markdown)
        assert f"**Verdict on {claim}**" in markdown
