"""The float64 row products the `lipschitz` probe's row queues answer (sweep/probes/rows.py):
plain forwards, forward-mode J v and reverse-mode J^T w, each row at its own point, on the
encoder's float64 copy (sweep/probes/jacobian.py, `Float64Encoder`). Pure torch, no I/O.
"""

from __future__ import annotations

import torch

from sweep.probes.jacobian import Float64Encoder


def forward64(enc: Float64Encoder, pixels: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, D) float64 embeddings."""
    return enc.forward_only(pixels)


def jvp64(enc: Float64Encoder, points: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n, D) rows J(x_i) v_i, by forward-mode AD. Rows come in runs at one point (an ask's rows
    are consecutive): a run shares its primal forward, its tangents batched by torch.vmap (4 rows
    of vit_tiny: 0.28 s against 0.41 s with a primal per row; the same numbers)."""
    parts = []
    for start, end in _runs(points):
        x = points[start:start + 1].contiguous()
        if end - start == 1:
            parts.append(torch.func.jvp(enc.embed, (x,), (v[start:end],))[1])
        else:
            parts.append(torch.vmap(lambda t, x=x: torch.func.jvp(enc.embed, (x,), (t[None],))[1][0])(v[start:end]))
    return torch.cat(parts)


def _runs(points: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of the runs of equal consecutive rows of points (n, ...); one host sync."""
    same = (points[1:] == points[:-1]).flatten(1).all(dim=1).tolist()  # (n - 1,)
    bounds = [0, *(i + 1 for i, s in enumerate(same) if not s), len(points)]
    return list(zip(bounds[:-1], bounds[1:]))


def vjp64(enc: Float64Encoder, points: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) rows J(x_i)^T w_i, by reverse mode."""
    xs = points.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        e = enc.embed(xs)
        (grad,) = torch.autograd.grad((e * w).sum(), xs)
    return grad
