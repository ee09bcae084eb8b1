"""Norm geometry of pixel perturbations, one implementation for every probe: the L2 or L-inf
norm of a batch of deltas, projection onto the eps-ball, the steepest-ascent direction under a
norm, and random points: directions (random signs for L-inf, a unit Gaussian direction for L2),
points of the ball, and deltas whose norm *after* the [0, 1] clamp is eps.

`match` projects onto its optional eps-ball around the source; `perturb` projects its ascent,
draws its starts and its random baseline here. Shapes: a batch of perturbations is
(B, 3, H, W) with a radius that is a scalar or (B,); a single draw is `shape` = (3, H, W), from
a CPU generator seeded per item (sweep/probes/common.item_generator).
"""

from __future__ import annotations

import torch

Norm = str  # "l2" | "linf"


def norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """(B,) L2 or L-inf norm of (B, 3, H, W) deltas."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def project(delta: torch.Tensor, norm: Norm, eps: float | torch.Tensor) -> torch.Tensor:
    """Project (B, 3, H, W) perturbations onto the L2 or L-inf ball of radius eps (scalar or (B,))."""
    eps_t = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device).reshape(-1, 1, 1, 1)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps_t), -eps_t)
    length = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * torch.clamp(eps_t / length.clamp_min(1e-12), max=1.0)


def steepest_ascent(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """(B, 3, H, W) the unit-norm direction that increases a loss fastest to first order: the
    gradient's sign under L-inf, the gradient scaled to unit length per row under L2."""
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)


def random_direction(shape: torch.Size | tuple[int, ...], norm: Norm, generator: torch.Generator) -> torch.Tensor:
    """A random direction of unit norm: random signs (L-inf) or a unit Gaussian direction (L2)."""
    if norm == "linf":
        return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).float()
    direction = torch.randn(shape, generator=generator)
    return direction / direction.norm()


def ball_point(shape: torch.Size | tuple[int, ...], norm: Norm, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A random point of the ball of radius eps: uniform per value (L-inf); a Gaussian direction
    at a radius uniform in [0, eps] (L2)."""
    if norm == "linf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * eps
    direction = torch.randn(shape, generator=generator)
    radius = torch.rand((), generator=generator) * eps
    return direction / direction.norm() * radius


def clamped_at_norm(x0: torch.Tensor, u: torch.Tensor, eps: torch.Tensor, norm: Norm) -> torch.Tensor:
    """(B, 3, H, W) deltas along the unit directions u (see `random_direction`) whose norm after
    the [0, 1] clamp of x0 + delta is eps (B,): for L-inf the signs at size eps (their L-inf norm
    survives the clamp), for L2 the scale found by `clamped_to_norm`."""
    if norm == "linf":
        return (x0 + u * eps.view(-1, 1, 1, 1)).clamp(0, 1) - x0
    return clamped_to_norm(x0, u, eps)


def clamped_to_norm(x0: torch.Tensor, u: torch.Tensor, eps: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """(B, 3, H, W) deltas clamp(x0 + s u, 0, 1) - x0 with the scale s >= eps (per row, by
    bisection in float64) at which their L2 norm is eps; where no scale reaches eps, the delta
    at the largest scale tried. The norm grows monotonically with s, so bisection is exact."""
    x0d, ud = x0.double(), u.double()
    target = eps.double()

    def clamped(scale: torch.Tensor) -> torch.Tensor:
        return (x0d + scale.view(-1, 1, 1, 1) * ud).clamp(0, 1) - x0d

    def size(scale: torch.Tensor) -> torch.Tensor:
        return clamped(scale).flatten(1).norm(dim=1)

    lo = target.clone()  # unit u: clamping only shrinks, so size(eps) <= eps
    hi = target.clone()
    for _ in range(iters):  # grow hi until it reaches eps (or gives up: saturated everywhere)
        short = size(hi) < target
        if not bool(short.any()):
            break
        hi = torch.where(short, hi * 2, hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        reached = size(mid) >= target
        hi = torch.where(reached, mid, hi)
        lo = torch.where(reached, lo, mid)
    return clamped(hi).to(x0.dtype)


__all__ = ["ball_point", "clamped_at_norm", "clamped_to_norm", "norms", "project", "random_direction", "steepest_ascent"]
