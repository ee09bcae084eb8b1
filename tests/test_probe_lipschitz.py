"""Lipschitz probe on a linear encoder f(x) = W x, where every estimate has an exact value:
the singular values of W, and ||W v|| for each direction v the probe used."""

from __future__ import annotations

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput

REL = 1e-3


@pytest.fixture(scope="module")
def linear():
    encoder = load_encoder("tests.encoders_for_tests:linear_encoder", device="cpu")
    weight = encoder.module.weight.detach().double()  # (16, 192)
    g = torch.Generator().manual_seed(3)
    pair = PairInput("p0", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g))
    probe = build_probe("lipschitz", {"top_k": 4, "iters": 60, "n_random": 3, "n_null": 3, "h": [0.01, 1.0, 10.0]})
    (result,) = list(probe.run(encoder, [pair], batch_size=5, seed=0))
    return encoder, weight, pair, result


def _exact_norms(weight: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    return (directions.flatten(1).double() @ weight.T).norm(dim=1)


def test_top_singular_values_equal_svd_of_w(linear):
    _, weight, _, result = linear
    exact = torch.linalg.svdvals(weight)[:4]
    got = torch.tensor(result.extra["sigmas"], dtype=torch.float64)
    assert torch.allclose(got, exact, rtol=REL), (got, exact)
    sigma_rows = [r["sigma"] for r in result.rows if r["family"] == "top" and r["h"] == 0.01]
    assert torch.allclose(torch.tensor(sigma_rows, dtype=torch.float64), exact, rtol=REL)


@pytest.mark.parametrize("family", ["random", "top", "match", "null"])
def test_every_estimate_equals_norm_of_w_v(linear, family):
    _, weight, _, result = linear
    directions = result.extra["directions"][family]
    assert torch.allclose(directions.flatten(1).norm(dim=1), torch.ones(len(directions)), atol=1e-5)
    exact = _exact_norms(weight, directions)
    rows = [r for r in result.rows if r["family"] == family]
    assert len(rows) == len(directions) * 3
    for row in rows:
        want = float(exact[row["direction"]])
        assert row["l_jvp"] == pytest.approx(want, rel=REL)
        assert row["l_fd"] == pytest.approx(want, rel=REL)
        assert row["nonlinearity"] < 2e-3


def test_null_directions_are_orthogonal_to_the_top_subspace(linear):
    _, weight, _, result = linear
    top_right = torch.linalg.svd(weight, full_matrices=False).Vh[:4]  # (4, 192)
    null = result.extra["directions"]["null"].flatten(1).double()
    assert (null @ top_right.T).abs().max() < 1e-3
    # and so their Lipschitz numbers sit below sigma_4
    sigma4 = float(torch.linalg.svdvals(weight)[3])
    assert all(r["l_jvp"] < sigma4 for r in result.rows if r["family"] == "null")


def test_match_direction_is_the_matching_descent_direction(linear):
    _, weight, pair, result = linear
    x0, t = pair.src.flatten().double(), pair.tgt.flatten().double()
    grad = weight.T @ (weight @ x0 - weight @ t)
    want = -grad / grad.norm()
    got = result.extra["directions"]["match"].flatten().double()
    assert torch.allclose(got, want, atol=1e-5)


def test_top_is_far_above_random_for_a_vit():
    """The gap the probe exists to measure, on a real (tiny, random-init) ViT."""
    encoder = load_encoder("tests.tiny_models:tiny_vit", device="cpu")
    g = torch.Generator().manual_seed(0)
    pair = PairInput("v", torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g))
    probe = build_probe("lipschitz", {"top_k": 2, "iters": 15, "n_random": 4, "n_null": 4, "h": [0.001]})
    (result,) = list(probe.run(encoder, [pair], batch_size=8))
    sigma1 = result.extra["sigmas"][0]
    randoms = [r["l_jvp"] for r in result.rows if r["family"] == "random"]
    assert sigma1 > 3 * max(randoms)
    for row in result.rows:  # small h: locally linear, finite difference agrees with the JVP
        assert row["nonlinearity"] < 0.05, row


def test_top_k_beyond_the_embedding_size_gives_every_singular_value(linear):
    encoder, weight, pair, _ = linear
    probe = build_probe("lipschitz", {"families": ["top", "null"], "top_k": 20, "iters": 40, "h": [1.0]})
    (result,) = list(probe.run(encoder, [pair], batch_size=8))
    assert result.error is None
    exact = torch.linalg.svdvals(weight)  # 16 of them: J has rank 16
    assert torch.allclose(torch.tensor(result.extra["sigmas"], dtype=torch.float64), exact, rtol=REL)
    # with the whole row space projected out, a null direction is a true null direction of W
    assert all(r["l_jvp"] < 1e-4 for r in result.rows if r["family"] == "null")
