"""The dashboard's Models page shows each claim's verdicts beside its numbers (Streamlit AppTest
on a run built with known verdicts: tests/claimrun.py, the demo-like mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from claimrun import make_claims_run  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TIMEOUT = 90


def test_models_page_shows_a_verdict_beside_each_claim(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = make_claims_run(tmp_path, "demo")
    monkeypatch.setenv("VITSWEEP_RUNS", str(run))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("views/models.py").run()
    assert not at.exception, [e.value for e in at.exception]
    frames = [d.value for d in at.dataframe]
    at_verdicts = [i for i, f in enumerate(frames) if {"verdict", "reason"} <= set(f.columns)]
    verdicts = [frames[i] for i in at_verdicts]
    # one verdict table per claim query, in the page's order, each right before its numbers
    got = [(list(f["verdict"]), f["n"].tolist()) for f in verdicts[:5]]
    assert got == [(["✔ supported"], [40]), (["✘ not supported"], [40]),
                   (["✔ supported"], [34]), (["✔ supported"], [40]), (["✔ supported"], [40])]
    assert "success_rate" in frames[at_verdicts[0] + 1].columns  # the equivalence numbers follow
    assert "median_psnr" in frames[at_verdicts[1] + 1].columns
    markdown = "\n".join(str(m.value) for m in at.markdown)
    for claim in ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz"):
        assert f"**Verdict on {claim}**" in markdown
