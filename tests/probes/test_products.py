"""The float64 row products of the `lipschitz` probe (sweep/probes/products.py): a run of rows
at one point shares its primal forward and gives the numbers of a primal per row; rows at
different points stay apart; the plain forward through fused attention equals the math one to
float64 round-off and leaves the copy's attention as it was (math, for the derivatives)."""

from __future__ import annotations

import pytest
import torch

from sweep.probes.jacobian import Float64Encoder
from sweep.probes.products import _runs, forward64, jvp64

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/probes/conftest.py


def test_runs_of_equal_consecutive_points():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    points = torch.stack([a, a, b, a, a, a])
    assert _runs(points) == [(0, 2), (2, 3), (3, 6)]
    assert _runs(points[:1]) == [(0, 1)]


def test_jvp_runs_equal_one_primal_per_row(tiny):
    f64 = Float64Encoder(tiny)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    points = torch.stack([x, x, x, y, x, x])  # runs of 3, 1 and 2
    v = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    batched = jvp64(f64, points, v)
    one_by_one = torch.cat([torch.func.jvp(f64.embed, (p[None],), (t[None],))[1] for p, t in zip(points, v)])
    assert batched.shape == (6, 48) and torch.allclose(batched, one_by_one, rtol=1e-12, atol=1e-14)


def test_forward_only_uses_fused_attention_and_restores_the_math_kernel(tiny):
    f64 = Float64Encoder(tiny)
    assert f64._fused and not any(m.fused_attn for m in f64._fused)  # the copy's derivatives: math
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        math = f64.embed(x)
    fused = forward64(f64, x)
    assert not any(m.fused_attn for m in f64._fused)
    assert fused.dtype == torch.float64 and torch.allclose(fused, math, rtol=1e-13, atol=1e-15)
