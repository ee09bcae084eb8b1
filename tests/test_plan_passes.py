"""`vitsweep plan`'s pass counts against a real probe run: an encoder that counts every image it
embeds (plain forwards, backward passes to the input, forward-mode JVPs) runs each probe on a few
pairs, with thresholds out of reach so every pair takes its full budget; the counts must equal
`passes_per_pair` times the pairs, exactly. And the rate table's FLOP formula against the
science notes' measured figures."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoders_for_tests import LinearEncoder  # noqa: E402

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput
from sweep.run.plan import Passes, passes_per_pair
from sweep.run.rates import table_rates, vit_gflop

N_PAIRS = 5
BATCH = 3  # < N_PAIRS: slots are refilled mid-run


class CountingEncoder(LinearEncoder):
    """The linear test encoder, counting image rows per kind of pass."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"plain": 0, "backward": 0, "jvp": 0}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) -> (B, 16)
        out = super().forward(pixels)
        rows = int(pixels.shape[0])
        if torch._C._functorch.maybe_current_level() is not None:  # inside torch.func.jvp
            self.counts["jvp"] += rows
        elif out.requires_grad:
            def on_backward(grad: torch.Tensor) -> None:
                self.counts["backward"] += int(grad.shape[0])

            out.register_hook(on_backward)
        else:
            self.counts["plain"] += rows
        return out


def counting_encoder() -> CountingEncoder:
    return CountingEncoder()


def pairs(n: int) -> list[PairInput]:
    g = torch.Generator().manual_seed(0)
    return [PairInput(pair_id=f"p{i}", src=torch.rand(3, 8, 8, generator=g), tgt=torch.rand(3, 8, 8, generator=g))
            for i in range(n)]  # fmt: skip


def counted(probe: str, params: dict[str, Any]) -> tuple[dict[str, int], list[Any], Any]:
    enc = load_encoder(f"{__name__}:counting_encoder", "factory", device="cpu")
    p = build_probe(probe, params)
    results = list(p.run(enc, pairs(N_PAIRS), batch_size=BATCH, seed=0))
    assert len(results) == N_PAIRS and all(r.error is None for r in results)
    return enc.module.counts, results, p.params


def as_counts(passes: Passes, n: int) -> dict[str, int]:
    # a backward pass's forward counts as part of it (the hook sees the gradient, not the forward)
    return {"plain": int(passes.plain * n), "backward": int(passes.backward * n), "jvp": int(passes.jvp * n)}


@pytest.mark.parametrize("params", [
    {"max_steps": 7, "rho": 1e-9, "min_cos": 1.0},
    {"preset": "paper", "max_steps": 6, "tau": 1e-30, "min_cos": 1.0, "lr": 0.01},
], ids=["default", "paper"])  # fmt: skip
def test_match_passes(params: dict[str, Any]) -> None:
    counts, results, p = counted("match", params)
    assert all(not r.rows[0]["success"] and r.rows[0]["steps"] == p.max_steps for r in results)
    assert counts == as_counts(passes_per_pair("match", p), N_PAIRS)


def test_perturb_passes() -> None:
    counts, _, p = counted("perturb", {"eps": [0.01, 0.02, 0.05], "steps": 4, "random_draws": 3})
    assert counts == as_counts(passes_per_pair("perturb", p), N_PAIRS)


@pytest.mark.parametrize("families", [["random", "top", "match", "null"], ["random"], ["null"]])
def test_lipschitz_passes(families: list[str]) -> None:
    params = {"families": families, "h": [0.1, 1.0, 3.0], "n_random": 2, "top_k": 3, "n_null": 2, "iters": 3, "oversample": 2}
    counts, _, p = counted("lipschitz", params)
    assert counts == as_counts(passes_per_pair("lipschitz", p), N_PAIRS)


def test_flop_formula_matches_the_measured_figures() -> None:
    # The science notes' figures per matching step: ViT-B/16 72 GFLOP, ViT-H/14 685 GFLOP.
    assert vit_gflop("vit_base_patch16_224.augreg2_in21k_ft_in1k") == pytest.approx(72, rel=0.05)
    assert vit_gflop("vit_huge_patch14_clip_224.laion2b") == pytest.approx(685, rel=0.05)
    assert vit_gflop("tests.encoders_for_tests:linear_encoder") is None
    base = table_rates("vit_base_patch16_224")
    assert base is not None and base.step("bf16") == 3265 and base.step("bf16", compiled=True) == 4289
    assert base.step("fp32") == pytest.approx(3265 * 67 / 794) and base.forward == pytest.approx(2 * 3265 * 67 / 794)
    # an unmeasured ViT: B/16's rate scaled by FLOP
    small = table_rates("vit_small_patch16_224")
    assert small is not None
    assert small.step_bf16 == pytest.approx(3265 * vit_gflop("vit_base_patch16_224") / vit_gflop("vit_small_patch16_224"))
    assert "derived" in small.source and "measured" in base.source
    assert math.isfinite(small.jvp)
