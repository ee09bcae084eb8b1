"""No `nonlinearity` value above 1e3 in any shipped fixture run (issue 22, point 5): the
nonlinearity query over tests/support's runs (the report fixture, the claims runs, the scale run).
The probe's own rows on a tiny ViT and the linear map: tests/probes/test_lipschitz_floors.py."""

from __future__ import annotations

from pathlib import Path

from analysis.db import open_runs
from analysis.named import run_named
from tests.support.claim_runs import make_claims_run
from tests.support.runs import make_fixture_run, make_scale_run


def test_no_nonlinearity_above_1e3_in_shipped_fixtures(tmp_path: Path) -> None:
    runs = [make_fixture_run(tmp_path / "fixture"),
            *(make_claims_run(tmp_path / mode, mode)[0] for mode in ("satisfy", "violate", "demo")),
            make_scale_run(tmp_path / "scale", pairs=200, pairs_per_unit=50)]
    for run in runs:
        run = run[0] if isinstance(run, tuple) else run
        df = run_named(open_runs([run]), "nonlinearity", {})
        assert len(df), run
        assert (df["max_nonlinearity"].fillna(0) <= 1e3).all(), (run, df["max_nonlinearity"].max())
        assert ((df["n_resolved"] + df["n_undefined"]) == df["n"]).all()
