"""Probe `equivalence` on the linear encoder f(x) = W x, where every number has a closed form:
the segment target -> x_matched stays at the match tolerance (f(y(t)) - f(tgt) = t (f(x_m) - f(tgt))),
f along x0 -> x_matched is its chord and its first-order prediction (deviation: fp32 round-off),
and a walk whose predictor removes the whole row space (walk_k = D) never leaves the set; the
planner's count against a counting run; a small ViT end to end."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/probes/conftest.py
ROUND_OFF = 1e-5  # fp32 round-off, relative to the pair distance


@pytest.fixture(scope="module")
def linear() -> tuple[Any, torch.Tensor]:
    enc = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    return enc, enc.module.weight.detach().double()


def _pairs(n: int, size: int = 8, seed: int = 3) -> list[PairInput]:
    g = torch.Generator().manual_seed(seed)
    return [PairInput(f"p{i}", torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)) for i in range(n)]


def test_path_linearity_closed_forms(linear):
    enc, weight = linear
    probe = build_probe("equivalence", {"match": {"max_steps": 300}, "walk_steps": 0})
    results = list(probe.run(enc, _pairs(3), batch_size=2, seed=0))
    assert len(results) == 3
    for r in results:
        row = r.rows[0]
        assert r.error is None and row["match_success"] and row["path_points"] == 17
        src, tgt, adv = (r.images[k].double().flatten() for k in ("src", "tgt", "adv"))
        pair = float((weight @ (src - tgt)).norm())
        tolerance = float((weight @ (adv - tgt)).norm()) / pair  # ||f(x_m) - f(tgt)|| / pair distance
        assert row["pair_dist"] == pytest.approx(pair, rel=1e-5)
        assert row["path_target_end"] == pytest.approx(tolerance, rel=1e-4)
        assert row["path_target_max"] == pytest.approx(tolerance, rel=1e-4)
        t = torch.linspace(0, 1, 17, dtype=torch.float64)
        assert torch.allclose(torch.tensor(row["path_target_curve"], dtype=torch.float64), t * tolerance, atol=ROUND_OFF)
        assert row["path_chord_max"] <= ROUND_OFF and row["path_linear_max"] <= ROUND_OFF
        assert len(row["path_chord_curve"]) == len(row["path_linear_curve"]) == 17
        assert row["seg_src_l2"] == pytest.approx(float((adv - src).norm()), rel=1e-5)
        assert row["seg_tgt_linf"] == pytest.approx(float((adv - tgt).abs().max()), rel=1e-5)
        assert row["seg_src_psnr"] == pytest.approx(10 * torch.log10(1 / (adv - src).pow(2).mean()).item(), rel=1e-4)
        assert "walk_radius" not in row


def test_failed_match_has_no_path_columns(linear):
    enc, _ = linear
    probe = build_probe("equivalence", {"match": {"max_steps": 3, "rho": 1e-9, "min_cos": 1.0}, "walk_steps": 0})
    (r,) = list(probe.run(enc, _pairs(1), batch_size=1, seed=0))
    assert r.rows[0]["match_success"] is False and "path_target_max" not in r.rows[0]


def test_walk_with_the_whole_row_space_removed_never_leaves_the_set(linear):
    """walk_k = D = 16 removes W's whole row space from the predictor and no value is clamped
    (x0 = 0.5, small steps): f stays at f(x0) to round-off, every step kept; the random walk
    (no corrector) leaves at once-ish, so the ratio is > 1."""
    enc, weight = linear
    g = torch.Generator().manual_seed(1)
    pair = PairInput("w", torch.full((3, 8, 8), 0.5) + 0.01 * torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g))
    params = {"path_points": 0, "walk_steps": 20, "walk_k": 16, "walk_iters": 30, "walk_step": 0.001, "corrector": 0, "delta": 0.01}
    (r,) = list(build_probe("equivalence", params).run(enc, [pair], batch_size=1, seed=0))
    row = r.rows[0]
    assert row["walk_kept"] == 20 and len(row["walk_curve"]) == 20
    assert max(row["walk_curve"]) <= ROUND_OFF  # never leaves: f(x) = f(x0)
    end = r.images["adv"].double().flatten()
    x0 = pair.src.double().flatten()
    assert float((weight @ (end - x0)).norm()) / row["pair_dist"] <= ROUND_OFF
    assert row["walk_radius"] == pytest.approx(float((end - x0).norm()), rel=1e-5)
    assert row["walk_radius"] == pytest.approx(20 * 0.001 * 192**0.5, rel=1e-4)  # every step its full length
    assert row["random_walk_kept"] < 20 and row["random_walk_curve"][-1] >= 0.01
    assert row["walk_ratio"] is None or row["walk_ratio"] > 1
    assert r.extra["image_variant"] == "walk"


def test_walk_with_corrector_stays_in_the_set(linear):
    enc, _ = linear
    params = {"path_points": 0, "walk_steps": 10, "walk_k": 16, "walk_iters": 30, "walk_step": 0.01, "corrector": 2}
    for r in build_probe("equivalence", params).run(enc, _pairs(2), batch_size=1, seed=0):
        row = r.rows[0]
        assert row["walk_kept"] == 10 and max(row["walk_curve"]) < 0.05


def test_vit_end_to_end(tiny):
    probe = build_probe("equivalence", {"match": {"max_steps": 30, "rho": 0.5, "min_cos": 0.5}, "walk_steps": 3, "walk_k": 2,
                                        "walk_iters": 2, "path_points": 5})
    (r,) = list(probe.run(tiny, _pairs(1, 32), batch_size=1, seed=0))
    row = r.rows[0]
    assert r.error is None and row["pair_dist"] > 0 and len(row["walk_curve"]) >= 1
    if row["match_success"]:
        assert len(row["path_target_curve"]) == 5 and row["path_target_curve"][0] == 0
