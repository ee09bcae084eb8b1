"""The Runs page shows the plan `vitsweep run` stored at its start (plan.json) next to the progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.support.runs import make_fixture_run


def test_runs_page_shows_the_plan(tmp_path: Path, open_app: Callable[..., AppTest]) -> None:
    run = make_fixture_run(tmp_path)
    plan = {"units": 8, "units_done": 0, "unit_pairs": 24, "image_passes": 123_456, "image_passes_expected": 100_000,
            "gpu_hours": 0.5, "seconds": 1800.0, "created_at": "2026-01-01T00:00:00Z",
            "rate_sources": ["rate table, NVIDIA H100 80GB: test"],
            "rows": [{"model": "vit_a", "weights": "random:0", "probe": "match", "setting": "max_steps=100",
                      "units": 8, "pairs": 24, "image_passes": 123_456, "image_passes_expected": 100_000}]}
    (run / "plan.json").write_text(json.dumps(plan))
    at = open_app(run)
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Planned units"] == "8" and metrics["Planned pairs"] == "24"
    assert metrics["GPU-hours ≤"] == "0.5" and metrics["Planned time ≤"] == "30 min 0 s"
    assert "rate table, NVIDIA H100 80GB: test" in "\n".join(str(c.value) for c in at.caption)
    assert any("image_passes_expected" in d.value.columns for d in at.dataframe)


def test_runs_page_without_a_plan_still_renders(tmp_path: Path, open_app: Callable[..., AppTest]) -> None:
    run = make_fixture_run(tmp_path)
    at = open_app(run)
    assert not at.exception
    assert "Planned units" not in {m.label for m in at.metric}
