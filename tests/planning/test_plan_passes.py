"""`vitsweep plan`'s pass counts against a real probe run: an encoder that counts every image it
embeds (plain forwards, backward passes to the input, forward-mode JVPs; also in lipschitz's
float64 copy of it) runs each probe on a few pairs; the counts must equal `passes_per_pair` times
the pairs, exactly. Where the count is an upper bound (`match`), two runs pin it down: thresholds
out of reach (every pair takes its full budget and no stop needs confirming: the bound less its
confirmation forward), and every pair stopping at its very last step (the bound itself). And the
rate table's FLOP formula against the science notes' measured figures."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tests.support.encoders import DIM, INPUT_SIZE

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput
from sweep.planning.plan import Passes, bound_note, passes_per_pair
from sweep.planning.rates import table_rates, vit_gflop

N_PAIRS = 5
BATCH = 3  # < N_PAIRS: slots are refilled mid-run
DIMS = (DIM, INPUT_SIZE[0] * INPUT_SIZE[1] * INPUT_SIZE[2])  # (D, d) of the linear encoder
UNREACHABLE = {"rho": 1e-9, "min_cos": 1.0}  # no pair ever passes the stopping test


def pairs(n: int, same: bool = False) -> list[PairInput]:
    """n pairs; `same`: n copies of one pair (under their own ids), which all take the same steps."""
    g = torch.Generator().manual_seed(0)
    if same:
        src, tgt = torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
        return [PairInput(pair_id=f"p{i}", src=src, tgt=tgt) for i in range(n)]
    return [PairInput(pair_id=f"p{i}", src=torch.rand(3, 8, 8, generator=g), tgt=torch.rand(3, 8, 8, generator=g))
            for i in range(n)]  # fmt: skip


def counted(probe: str, params: dict[str, Any], same: bool = False) -> tuple[dict[str, int], list[Any], Any]:
    enc = load_encoder("tests.support.counting:counting_encoder", "factory", device="cpu")
    p = build_probe(probe, params)
    results = list(p.run(enc, pairs(N_PAIRS, same), batch_size=BATCH, seed=0))
    assert len(results) == N_PAIRS and all(r.error is None for r in results)
    return dict(enc.module.counts), results, p.params


def steps_to_match(params: dict[str, Any]) -> int:
    """The steps after which the match probe stops (confirmed) on the `same` pair."""
    _, results, _ = counted("match", params, same=True)
    steps = {r.rows[0]["steps"] for r in results}
    assert all(r.rows[0]["success"] for r in results) and len(steps) == 1
    return steps.pop()


def as_counts(passes: Passes, n: int) -> dict[str, int]:
    # a backward pass's forward counts as part of it (the hook sees the gradient, not the forward)
    return {"plain": int(passes.plain * n), "backward": int(passes.backward * n), "jvp": int(passes.jvp * n),
            "rows": int(passes.rows * n)}


def less(passes: Passes, plain: float = 0, jvp: float = 0) -> Passes:
    return passes - Passes(plain=plain, jvp=jvp)


@pytest.mark.parametrize("params", [
    {"max_steps": 7, **UNREACHABLE},
    {"preset": "paper", "max_steps": 6, "tau": 1e-30, "min_cos": 1.0, "lr": 0.01},
], ids=["default", "paper"])  # fmt: skip
def test_match_passes(params: dict[str, Any]) -> None:
    counts, results, p = counted("match", params)
    assert all(not r.rows[0]["success"] and r.rows[0]["steps"] == p.max_steps for r in results)
    # the bound less the forward that confirms a stop: no pair ever passed the in-loop test
    assert counts == as_counts(less(passes_per_pair("match", p), plain=1), N_PAIRS)
    assert bound_note("match", p)


@pytest.mark.parametrize("params", [{}, {"preset": "paper", "tau": 1e-3, "min_cos": 0.5, "lr": 0.5}], ids=["default", "paper"])
def test_match_bound_is_reached_by_a_stop_at_the_last_step(params: dict[str, Any]) -> None:
    # every pair passes the test at the evaluation its last step makes; it is confirmed in fp32
    steps = steps_to_match(params)
    counts, results, p = counted("match", {**params, "max_steps": steps + 1}, same=True)
    assert all(r.rows[0]["success"] and r.rows[0]["steps"] == steps for r in results)
    assert counts == as_counts(passes_per_pair("match", p), N_PAIRS)


@pytest.mark.parametrize("params", [
    {"eps": [0.01, 0.02, 0.05], "steps": 4, "random_draws": 3},
    {"norm": "l2", "eps": [0.5, 4.0], "steps": 3, "random_draws": 2, "random_start": False},
], ids=["linf", "l2-tiny-start"])  # fmt: skip
def test_perturb_passes(params: dict[str, Any]) -> None:
    counts, _, p = counted("perturb", params)
    assert counts == as_counts(passes_per_pair("perturb", p), N_PAIRS)
    assert bound_note("perturb", p) == ""  # exact


LIPSCHITZ = {"h": [0.1, 1.0, 3.0], "n_random": 2, "top_k": 3, "n_null": 2, "iters": 3, "oversample": 2}


@pytest.mark.parametrize("families, extra", [
    (["random", "top", "grad", "null", "off_top"], {}),
    (["random"], {}),
    (["null"], {}),
    (["top", "off_top", "grad"], {}),  # subspace iteration (no Jacobian)
    (["top"], {"top_k": 20}),  # more than D = 16: J has 16 singular values
    (["null", "top", "random"], {"top_k": 20}),
    (["random", "random"], {}),  # a family listed twice is measured twice
    (["null"], {"jacobian": "float64"}),  # the former method: D float64 forward + backward rows
    (["random", "top", "grad", "null", "off_top"], {"jacobian": "float64"}),
])  # fmt: skip
def test_lipschitz_passes(families: list[str], extra: dict[str, Any]) -> None:
    counts, results, p = counted("lipschitz", {"families": families, **LIPSCHITZ, **extra})
    assert counts == as_counts(passes_per_pair("lipschitz", p, DIMS), N_PAIRS)
    assert bound_note("lipschitz", p) == ""  # exact
    if "top" in families:
        assert all(len(r.extra["sigmas"]) == min(p.top_k, DIM) for r in results)


def test_lipschitz_dims_are_required() -> None:
    p = build_probe("lipschitz", {"families": ["null"]}).params
    with pytest.raises(ValueError, match="embedding size"):
        passes_per_pair("lipschitz", p)
    # the Jacobian (D is known from the clean forward): by default one fp32 forward and D fp32
    # backward rows sharing it; with jacobian float64, D float64 forward + backward rows
    fp32 = passes_per_pair("lipschitz", p, (768, 150_528))
    f64 = passes_per_pair("lipschitz", p.model_copy(update={"jacobian": "float64"}), (768, 150_528))
    assert (fp32.rows, fp32.backward, f64.rows, f64.backward) == (768, 0, 0, 768)
    assert f64 - fp32 == Passes(plain=-1, backward=768, rows=-768)
    assert fp32.total == f64.total - 768 + 1  # the forward paid once, not D times


def test_lipschitz_match_family_passes() -> None:
    families = ["random", "match", "grad"]
    # the match run fails (full budget, no confirmation): no match direction is measured
    counts, results, p = counted("lipschitz", {"families": families, **LIPSCHITZ, "match": {"max_steps": 5, **UNREACHABLE}})
    assert all(r.extra["match_success"] is False for r in results)
    bound = passes_per_pair("lipschitz", p, DIMS)
    assert bound_note("lipschitz", p)
    # no match direction: neither its finite differences at every h, its f(x_matched) at its own
    # step h = ||x_matched - x0|| (issue 22), nor its ||J v||
    assert counts == as_counts(less(bound, plain=2 + len(p.h), jvp=1), N_PAIRS)
    # the match run stops at its last step: the bound itself
    steps = steps_to_match({})
    counts, results, p = counted("lipschitz", {"families": families, **LIPSCHITZ, "match": {"max_steps": steps + 1}}, same=True)
    assert all(r.extra["match_success"] is True for r in results)
    assert counts == as_counts(passes_per_pair("lipschitz", p, DIMS), N_PAIRS)


def test_flop_formula_matches_the_measured_figures() -> None:
    # The science notes' figures per matching step: ViT-B/16 72 GFLOP, ViT-H/14 685 GFLOP.
    assert vit_gflop("vit_base_patch16_224.augreg2_in21k_ft_in1k") == pytest.approx(72, rel=0.05)
    assert vit_gflop("vit_huge_patch14_clip_224.laion2b") == pytest.approx(685, rel=0.05)
    assert vit_gflop("tests.support.encoders:linear_encoder") is None
    base = table_rates("vit_base_patch16_224")
    assert base is not None and base.step("bf16") == 3293 and base.step("bf16", compiled=True) == 4297
    assert base.step("fp32") == pytest.approx(3293 * 67 / 794) and base.forward == pytest.approx(2 * 3293 * 67 / 794)
    # an unmeasured ViT: B/16's rate scaled by FLOP
    small = table_rates("vit_small_patch16_224")
    assert small is not None
    assert small.step_bf16 == pytest.approx(3293 * vit_gflop("vit_base_patch16_224") / vit_gflop("vit_small_patch16_224"))
    assert "derived" in small.source and "measured" in base.source
    assert math.isfinite(small.jvp)


def test_equivalence_passes() -> None:
    # walks that never leave the set (delta huge) take every step: the bound, exactly
    walk = {"path_points": 0, "walk_steps": 3, "walk_k": 2, "walk_iters": 2, "corrector": 2, "delta": 1e9}
    counts, results, p = counted("equivalence", walk)
    assert all(r.rows[0]["walk_kept"] == 3 for r in results)
    assert counts == as_counts(passes_per_pair("equivalence", p), N_PAIRS)
    assert bound_note("equivalence", p)
    # path linearity after a match that stops at its last step (confirmed), and the walks: the bound
    steps = steps_to_match({})
    counts, results, p = counted("equivalence", {**walk, "path_points": 5, "match": {"max_steps": steps + 1}}, same=True)
    assert all(r.rows[0]["match_success"] and len(r.rows[0]["path_target_curve"]) == 5 for r in results)
    assert counts == as_counts(passes_per_pair("equivalence", p), N_PAIRS)
