"""The random baseline is the median draw (issue 22, point 8): the best of k draws grows with k,
so `over_random` depended on `random_draws` (the demo uses 2, the default 8: 1.29x apart)."""

from __future__ import annotations

import statistics

import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput


def _over_random(draws: int) -> tuple[float, float]:
    encoder = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    g = torch.Generator().manual_seed(5)
    pairs = [PairInput(f"p{i}", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g))
             for i in range(40)]
    probe = build_probe("perturb", {"norm": "linf", "eps": [1 / 255], "steps": 10, "random_draws": draws})
    rows = [r.rows[0] for r in probe.run(encoder, pairs, batch_size=40, seed=0)]
    assert all(r["random_disp_max"] >= r["random_disp"] > 0 for r in rows)
    return (statistics.median(r["disp_over_pair"] / r["random_disp_over_pair"] for r in rows),
            statistics.median(r["disp_over_pair"] / r["random_disp_over_pair_max"] for r in rows))


def test_over_random_does_not_depend_on_the_number_of_draws() -> None:
    (med2, max2), (med8, max8) = _over_random(2), _over_random(8)
    assert abs(med8 / med2 - 1) < 0.05, (med2, med8)
    assert max8 < max2  # the best-of-k baseline grows with k: the ratio over it shrinks
