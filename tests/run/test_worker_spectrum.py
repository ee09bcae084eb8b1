"""The `spectrum` table: a unit whose probe built the Jacobian (lipschitz family `null`) stores
every singular value of J per ok pair, written with the unit's other tables; the named query
`spectrum` turns them into effective rank and sigma_k / sigma_1. On the linear encoder J = W at
every pair, so the stored spectrum is W's singular values exactly."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from analysis.db import open_runs
from analysis.named import run_named
from sweep.run.spec import load_spec
from sweep.run.worker import EncoderCache, run_unit
from tests.support.encoders import LinearEncoder
from tests.support.sweeps import make_shards, read_table, write_spec

PAIRS = 4
CORRUPT = 1


def test_spectrum_rows_equal_the_linear_maps_singular_values(tmp_path: Path) -> None:
    make_shards(tmp_path / "shards", 1, PAIRS, corrupt={CORRUPT})
    probes = [{"name": "lipschitz", "params": {"families": ["null", "random"], "h": [1.0], "n_null": 2, "n_random": 1}},
              {"name": "lipschitz", "params": {"families": ["random"], "h": [1.0], "n_random": 1}}]  # no J: no rows
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run", probes=probes))
    cache = EncoderCache("cpu")
    for unit in loaded.units:
        run_unit(unit, cache, str(tmp_path / "run"), run_id="run-s")
    rows = read_table(tmp_path / "run", "spectrum").to_pylist()
    exact = torch.linalg.svdvals(LinearEncoder().weight.detach().double()).tolist()
    assert len(rows) == PAIRS - 1  # the undecodable pair has none; the setting without J none
    assert {r["pair_id"] for r in rows} == {f"pair-{i:06d}" for i in range(PAIRS) if i != CORRUPT}
    for row in rows:
        assert row["status"] == "ok" and row["jacobian"] == "fp32" and row["rank"] == 16 and row["n_values"] == 16
        assert row["singular_values"] == [pytest_approx(v) for v in exact]
    con = open_runs([tmp_path / "run"])
    answer = run_named(con, "spectrum", {"k": "4"})
    assert len(answer) == PAIRS - 1
    p = torch.tensor(exact, dtype=torch.float64) / sum(exact)
    effective = math.exp(-float((p * p.log()).sum()))
    first = answer.iloc[0]
    assert abs(first["effective_rank"] - effective) < 1e-9 and abs(first["sigma1"] - exact[0]) < 1e-9
    assert abs(first["sigma_k_over_sigma1"] - exact[3] / exact[0]) < 1e-9
    assert abs(first["stable_rank"] - sum(v * v for v in exact) / exact[0] ** 2) < 1e-9
    assert first["rank"] == 16


def pytest_approx(value: float):
    import pytest

    return pytest.approx(value, rel=1e-10)
