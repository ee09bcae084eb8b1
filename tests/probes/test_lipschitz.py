"""Lipschitz probe on a linear encoder f(x) = W x, where every estimate has an exact value:
the singular values of W, and ||W v|| for each direction v the probe used."""

from __future__ import annotations

import copy

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput

REL = 1e-3


@pytest.fixture(scope="module")
def linear():
    encoder = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    weight = encoder.module.weight.detach().double()  # (16, 192)
    g = torch.Generator().manual_seed(3)
    pair = PairInput("p0", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g))
    probe = build_probe("lipschitz", {
        "families": ["random", "top", "grad", "null", "off_top", "match"], "top_k": 4, "iters": 60,
        "n_random": 3, "n_null": 3, "match": {"max_steps": 300},
    })  # the default h grid
    (result,) = list(probe.run(encoder, [pair], batch_size=5, seed=0))
    return encoder, weight, pair, result


H_GRID = [0.01, 0.1, 1.0, 10.0]
EXACT = 1e-6  # float64: every estimate equals its closed form to this relative error


def _exact_norms(weight: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    return (directions.flatten(1).double() @ weight.T).norm(dim=1)


def test_top_singular_values_equal_svd_of_w(linear):
    _, weight, _, result = linear
    exact = torch.linalg.svdvals(weight)[:4]
    got = torch.tensor(result.extra["sigmas"], dtype=torch.float64)
    assert torch.allclose(got, exact, rtol=REL), (got, exact)
    sigma_rows = [r["sigma"] for r in result.rows if r["family"] == "top" and r["h"] == 0.01]
    assert torch.allclose(torch.tensor(sigma_rows, dtype=torch.float64), exact, rtol=REL)


@pytest.mark.parametrize("family", ["random", "top", "grad", "off_top", "match"])
def test_every_estimate_equals_norm_of_w_v(linear, family):
    """At every h of the default grid, l_fd and l_jvp equal ||W v|| to 1e-6 (in fp32, l_fd at
    h = 0.01 was off by up to 51x along flat directions), and no nonlinearity above round-off."""
    _, weight, _, result = linear
    directions = result.extra["directions"][family]
    assert torch.allclose(directions.flatten(1).norm(dim=1), torch.ones(len(directions), dtype=torch.float64), atol=1e-12)
    exact = _exact_norms(weight, directions)
    rows = [r for r in result.rows if r["family"] == family and r.get("fd_residual") is None]
    assert len(rows) == len(directions) * len(H_GRID)  # (+ the match path's own step: test_lipschitz_floors)
    assert sorted({r["h"] for r in rows}) == H_GRID
    for row in rows:
        want = float(exact[row["direction"]])
        assert row["l_jvp"] == pytest.approx(want, rel=EXACT)
        assert row["l_fd"] == pytest.approx(want, rel=EXACT), row
        assert abs(row["l_fd"] - row["l_jvp"]) <= row["fd_floor"] < 1e-9
        assert row["nonlinearity"] is None  # f is linear: no deviation above the round-off floor


def test_null_directions_are_in_the_null_space_of_w(linear):
    """`null` removes the whole row space of J (rank 16 here), not just the top-k subspace:
    W v = 0 to round-off, so every estimate is <= 1e-5 sigma_1 (the top-k-removed directions,
    `off_top`, keep most of the row space and stay of the size of random ones)."""
    _, weight, _, result = linear
    sigma1 = float(torch.linalg.svdvals(weight)[0])
    null = result.extra["directions"]["null"].flatten(1).double()
    assert (null @ weight.T).norm(dim=1).max() <= 1e-12 * sigma1  # independently: W v
    rows = [r for r in result.rows if r["family"] == "null"]
    assert len(rows) == 3 * len(H_GRID)
    for row in rows:
        assert row["l_jvp"] <= 1e-5 * sigma1 and row["l_fd"] <= 1e-5 * sigma1, row
        assert row["jv_residual"] <= 1e-12
        assert row["rank"] == 16 == int(torch.linalg.matrix_rank(weight))
    off_top = [r["l_jvp"] for r in result.rows if r["family"] == "off_top"]
    assert min(off_top) > 1e-3 * sigma1
    top_right = torch.linalg.svd(weight, full_matrices=False).Vh[:4]  # (4, 192)
    off = result.extra["directions"]["off_top"].flatten(1).double()
    assert (off @ top_right.T).abs().max() < 1e-10
    sigma4 = float(torch.linalg.svdvals(weight)[3])
    assert all(r < sigma4 for r in off_top)


def test_grad_direction_is_the_matching_descent_direction(linear):
    _, weight, pair, result = linear
    x0, t = pair.src.flatten().double(), pair.tgt.flatten().double()
    grad = weight.T @ (weight @ x0 - weight @ t)
    want = -grad / grad.norm()
    got = result.extra["directions"]["grad"].flatten().double()
    assert torch.allclose(got, want, atol=1e-10)


def test_match_direction_is_where_a_real_match_went(linear):
    """Family `match` is x_matched - x0 of a successful `match` run with the nested parameters,
    not the first gradient step (which is family `grad`)."""
    encoder, _, pair, result = linear
    (matched,) = list(build_probe("match", {"max_steps": 300}).run(encoder, [pair], batch_size=1, seed=0))
    assert matched.rows[0]["success"] is True
    delta = (matched.images["adv"] - pair.src).flatten().double()
    got = result.extra["directions"]["match"].flatten()
    assert torch.allclose(got, delta / delta.norm(), atol=1e-6)
    assert float(got @ result.extra["directions"]["grad"].flatten()) < 0.999  # a different direction
    assert all(r["match_success"] is True for r in result.rows)


def test_a_failed_match_gives_no_match_rows(linear):
    encoder, _, pair, _ = linear
    probe = build_probe("lipschitz", {"families": ["grad", "match"], "h": [1.0], "match": {"max_steps": 2}})
    (result,) = list(probe.run(encoder, [pair], batch_size=4))
    assert {r["family"] for r in result.rows} == {"grad"}
    assert all(r["match_success"] is False for r in result.rows)


def test_top_is_far_above_random_and_null_far_below_for_a_vit():
    """The gap the probe exists to measure, on a real (tiny, random-init) ViT: sigma_1 well above
    random directions, and the true null space (row space of J projected out) >= 1000x below."""
    encoder = load_encoder("tests.support.tiny_models:tiny_vit", device="cpu")
    g = torch.Generator().manual_seed(0)
    pair = PairInput("v", torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g))
    probe = build_probe("lipschitz", {
        "families": ["random", "top", "grad", "off_top", "null"], "top_k": 2, "n_random": 4, "n_null": 4, "h": [0.001],
    })
    (result,) = list(probe.run(encoder, [pair], batch_size=16))
    sigma1 = result.extra["sigmas"][0]
    randoms = [r["l_jvp"] for r in result.rows if r["family"] == "random"]
    assert sigma1 > 3 * max(randoms)
    for row in result.rows:  # small h: locally linear, finite difference agrees with the JVP
        if row["family"] != "null":
            assert row["nonlinearity"] is None or row["nonlinearity"] < 0.05, row
    nulls = sorted(r["l_jvp"] for r in result.rows if r["family"] == "null")
    assert nulls[len(nulls) // 2] * 1000 <= sorted(randoms)[len(randoms) // 2]
    # the rank is that of the Jacobian built here independently (plain torch, float64)
    module = copy.deepcopy(encoder.module).double()
    jac = torch.autograd.functional.jacobian(lambda x: module(x[None])[0], pair.src.double())  # (48, 3, 32, 32)
    rank = int(torch.linalg.matrix_rank(jac.reshape(jac.shape[0], -1)))
    assert all(r["rank"] == rank for r in result.rows) and 40 <= rank <= 48


def test_top_k_beyond_the_embedding_size_gives_every_singular_value(linear):
    encoder, weight, pair, _ = linear
    probe = build_probe("lipschitz", {"families": ["top", "null"], "top_k": 20, "iters": 40, "h": [1.0]})
    (result,) = list(probe.run(encoder, [pair], batch_size=8))
    assert result.error is None
    exact = torch.linalg.svdvals(weight)  # 16 of them: J has rank 16
    assert torch.allclose(torch.tensor(result.extra["sigmas"], dtype=torch.float64), exact, rtol=REL)
    # with the whole row space projected out, a null direction is a true null direction of W
    assert all(r["l_jvp"] < 1e-4 for r in result.rows if r["family"] == "null")


def test_families_are_validated_and_the_default_is_affordable():
    from sweep.errors import UserError

    assert build_probe("lipschitz", {}).params.families == ["random", "top", "grad", "null"]
    with pytest.raises(UserError, match="families"):
        build_probe("lipschitz", {"families": ["nul"]})
    with pytest.raises(UserError, match="match"):
        build_probe("lipschitz", {"match": {"learning_rate": 1}})


def _linear_pair():
    encoder = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    g = torch.Generator().manual_seed(3)
    return encoder, encoder.module.weight.detach().double(), PairInput("p0", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g))


def test_fd_is_exact_at_every_default_h():
    """With parameters that existed before: in fp32, l_fd at h = 0.01 was off by up to 2e-4
    relative here (it must be exact to 1e-6 at every h of the default grid)."""
    encoder, weight, pair = _linear_pair()
    probe = build_probe("lipschitz", {"families": ["random", "top"], "n_random": 3})
    (result,) = list(probe.run(encoder, [pair], batch_size=8, seed=1))
    assert sorted({r["h"] for r in result.rows}) == H_GRID
    for row in result.rows:
        v = result.extra["directions"][row["family"]][row["direction"]].flatten().double()
        assert row["l_fd"] == pytest.approx(float((weight @ v).norm()), rel=EXACT), row


def test_null_is_the_null_space_of_w():
    """With parameters that existed before: `null` (then only the top-k subspace removed) gave
    ||W v|| of about 0.16-0.19 sigma_1; it must be <= 1e-5 sigma_1."""
    encoder, weight, pair = _linear_pair()
    probe = build_probe("lipschitz", {"families": ["null"], "n_null": 3})
    (result,) = list(probe.run(encoder, [pair], batch_size=8, seed=1))
    sigma1 = float(torch.linalg.svdvals(weight)[0])
    assert len(result.rows) == 3 * len(H_GRID)
    for row in result.rows:
        v = result.extra["directions"]["null"][row["direction"]].flatten().double()
        assert float((weight @ v).norm()) <= 1e-12 * sigma1
        assert row["l_jvp"] <= 1e-5 * sigma1 and row["l_fd"] <= 1e-5 * sigma1, row


def test_match_family_follows_the_match_probe_with_its_defaults():
    """Family `match` with the match probe's default parameters: the direction of x_matched - x0
    (it was the first gradient step, -grad at x0, now family `grad`)."""
    encoder, _, pair = _linear_pair()
    (matched,) = list(build_probe("match", {}).run(encoder, [pair], batch_size=1, seed=0))
    assert matched.rows[0]["success"] is True
    (result,) = list(build_probe("lipschitz", {"families": ["match"], "h": [1.0]}).run(encoder, [pair], batch_size=4))
    delta = (matched.images["adv"] - pair.src).flatten().double()
    assert torch.allclose(result.extra["directions"]["match"].flatten().double(), delta / delta.norm(), atol=1e-6)
