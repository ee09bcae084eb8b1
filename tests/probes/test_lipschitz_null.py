"""The `null` family's default Jacobian (fp32: one forward, D backward rows batched, the float64
Gram J J^T): on the linear encoder every number equals its closed form (spectrum = W's singular
values, null vectors with ||W v|| / sigma_1 <= 1e-6); on a random-init ViT it agrees with the
float64 explicit Jacobian (the former method) and keeps the 1e-6 guarantee, measured per row
by a float64 JVP; a J that leaves no null space of n_null dimensions fails the pair, saying so."""

from __future__ import annotations

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput
from sweep.probes.jacobian import fp32_jacobian
from sweep.probes.vmap_kernels import swapped_forwards

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/probes/conftest.py
GUARANTEE = 1e-6


def _pair(size: int, tag: str = "n") -> PairInput:
    g = torch.Generator().manual_seed(5)
    return PairInput(tag, torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g))


def test_linear_encoder_spectrum_null_and_top_are_exact():
    enc = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    weight = enc.module.weight.detach().double()  # (16, 192)
    probe = build_probe("lipschitz", {"families": ["top", "null"], "top_k": 3, "n_null": 4, "h": [1.0]})
    (result,) = list(probe.run(enc, [_pair(8)], batch_size=5, seed=0))
    assert result.error is None
    exact = torch.linalg.svdvals(weight)
    spectrum = result.extra["singular_values"]
    assert len(spectrum) == 16 and torch.allclose(spectrum.double(), exact, rtol=1e-10)
    assert result.extra["rank"] == 16
    null = result.extra["directions"]["null"].flatten(1).double()
    assert (null @ weight.T).norm(dim=1).max() / exact[0] <= 1e-12  # W v = 0 to round-off
    rows = [r for r in result.rows if r["family"] == "null"]
    assert len(rows) == 4 and all(r["jv_residual"] <= GUARANTEE and r["rank"] == 16 for r in rows)
    top = result.extra["directions"]["top"].flatten(1).double()
    assert torch.allclose((top @ weight.T).norm(dim=1), exact[:3], rtol=1e-10)


def test_fp32_jacobian_is_one_forward_and_its_rows_batched():
    enc = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    jac = fp32_jacobian(enc, _pair(8).src, chunk=5)  # 16 rows in chunks of 5: a remainder
    assert jac.dtype == torch.float32 and jac.shape == (16, 192)
    assert torch.equal(jac, enc.module.weight.detach())


def test_swapped_forwards_give_the_same_function_and_derivative_and_are_restored():
    """A patch conv as a matmul: same values and gradients to round-off, on an input whose size
    is no multiple of the patch; a conv that is no patch conv is left alone."""
    conv, other = torch.nn.Conv2d(3, 5, 4, 4), torch.nn.Conv2d(5, 2, 3, 1)
    net = torch.nn.Sequential(conv, torch.nn.GELU(), other).double()
    x = torch.rand(2, 3, 18, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4 - 2
    w = torch.randn(2, 2, 1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def value_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        xs = x.clone().requires_grad_(True)
        out = net(xs)
        return out.detach(), torch.autograd.grad((out * w).sum(), xs)[0]

    plain, plain_grad = value_and_grad()
    with swapped_forwards(net):
        assert "forward" in vars(conv) and "forward" not in vars(other)
        swapped, swapped_grad = value_and_grad()
    assert not any("forward" in vars(m) for m in net.modules())  # restored
    assert swapped.shape == plain.shape and torch.allclose(swapped, plain, rtol=0, atol=1e-13)
    assert torch.allclose(swapped_grad, plain_grad, rtol=0, atol=1e-13)


def test_vit_fp32_jacobian_equals_the_plain_autograd_rows(tiny):
    """The kernels swapped for vmap (math attention, the patch conv as a matmul) change only
    round-off: J agrees with rows taken one by one through the encoder as it is."""
    x = _pair(32, "j").src
    jac = fp32_jacobian(tiny, x, chunk=7)
    assert "forward" not in vars(tiny.module.vit.patch_embed.proj)  # restored
    xs = x[None].clone().requires_grad_(True)
    out = tiny.embed(xs)[0]
    plain = torch.stack([torch.autograd.grad(out[i], xs, retain_graph=True)[0].flatten() for i in range(len(out))])
    assert jac.shape == plain.shape == (48, 3 * 32 * 32)
    assert float((jac - plain).norm() / plain.norm()) <= 1e-5


def test_vit_fp32_null_agrees_with_the_float64_jacobian_and_keeps_the_guarantee(tiny):
    pair = _pair(32, "v")
    params = {"families": ["top", "null"], "top_k": 2, "n_null": 4, "h": [1.0]}
    (fast,) = list(build_probe("lipschitz", params).run(tiny, [pair], batch_size=16, seed=0))
    (exact,) = list(build_probe("lipschitz", {**params, "jacobian": "float64"}).run(tiny, [pair], batch_size=16, seed=0))
    s_fast, s_exact = fast.extra["singular_values"].double(), exact.extra["singular_values"].double()
    assert s_fast.shape == s_exact.shape == (48,)
    # every singular value to the fp32 Jacobian's accuracy (relative to sigma_1)
    assert float((s_fast - s_exact).abs().max() / s_exact[0]) <= 1e-5
    assert fast.extra["sigmas"] == pytest.approx(exact.extra["sigmas"], rel=1e-5)
    nulls = [r for r in fast.rows if r["family"] == "null"]
    assert len(nulls) == 4 and all(r["jv_residual"] <= GUARANTEE for r in nulls)
    # the residual is the float64 JVP of the row over sigma_1
    sigma1 = float(s_fast[0])
    assert all(r["jv_residual"] == pytest.approx(r["l_jvp"] / sigma1, rel=1e-12) for r in nulls)


def test_no_null_space_of_n_null_dimensions_fails_the_pair():
    enc = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    # rank 16 of d = 192: 176 null dimensions
    probe = build_probe("lipschitz", {"families": ["null"], "n_null": 177, "h": [1.0]})
    (result,) = list(probe.run(enc, [_pair(8)], batch_size=5, seed=0))
    assert result.rows == [] and result.error is not None and "no null space" in result.error
    assert "rank(J) = 16" in result.error and "d = 192" in result.error
    (ok,) = list(build_probe("lipschitz", {"families": ["null"], "n_null": 176, "h": [1.0]}).run(enc, [_pair(8)], batch_size=5, seed=0))
    assert ok.error is None and len(ok.rows) == 176
