"""The `perturb` probe: eps-balls, [0, 1] bounds, batching independence, the random baseline."""

from __future__ import annotations

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tests.tiny_models:tiny_vit", device="cpu")


def _pairs(n: int) -> list[PairInput]:
    g = torch.Generator().manual_seed(11)
    return [PairInput(f"q{i}", torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)) for i in range(n)]


@pytest.mark.parametrize("norm,grid", [("linf", [1 / 255, 8 / 255]), ("l2", [0.1, 1.0])])
def test_rows_per_eps_within_bounds_and_beating_random(tiny, norm, grid):
    probe = build_probe("perturb", {"norm": norm, "eps": grid, "steps": 10, "random_draws": 4})
    results = list(probe.run(tiny, _pairs(3), batch_size=4, seed=0))
    assert sorted(r.pair_id for r in results) == ["q0", "q1", "q2"]
    for result in results:
        assert [row["eps"] for row in result.rows] == grid
        for row in result.rows:
            limit = row["pix_linf"] if norm == "linf" else row["pix_l2"]
            assert limit <= row["eps"] + 1e-5
            assert row["emb_disp"] > row["random_disp"]  # gradient ascent beats random noise of the same size
            assert row["rel_disp"] == pytest.approx(row["random_rel_disp"] * row["emb_disp"] / row["random_disp"], rel=1e-5)
        x = result.images["adv"]
        assert x.min() >= 0 and x.max() <= 1
        # a larger ball moves the embedding further
        assert result.rows[1]["emb_disp"] > result.rows[0]["emb_disp"]


def test_batched_equals_alone_and_seed_is_reproducible(tiny):
    probe = build_probe("perturb", {"eps": [2 / 255, 4 / 255, 8 / 255], "steps": 5, "random_draws": 2})
    pairs = _pairs(3)
    batched = {r.pair_id: r for r in probe.run(tiny, pairs, batch_size=4, seed=7)}
    for pair in pairs:
        (alone,) = list(probe.run(tiny, [pair], batch_size=1, seed=7))
        for a, b in zip(alone.rows, batched[pair.pair_id].rows):
            for key in ("emb_disp", "random_disp", "disp_over_pair", "cos_after", "psnr"):
                assert a[key] == pytest.approx(b[key], rel=1e-4), key
    other_seed = {r.pair_id: r for r in probe.run(tiny, pairs, batch_size=4, seed=8)}
    assert other_seed["q0"].rows[0]["random_disp"] != batched["q0"].rows[0]["random_disp"]
