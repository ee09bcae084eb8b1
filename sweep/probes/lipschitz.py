"""Probe `lipschitz` (local directional estimates) at the source image x0.

For unit directions v in pixel space (shape (3, H, W), ||v|| = 1):

    L_fd(v, h) = ||f(x0 + h v) - f(x0)|| / h        for each h of the grid (L2 pixel units)
    L_jvp(v)   = ||J v||                             the exact directional derivative

Families: `random` (Gaussian), `top` (top-k right singular vectors of J by matrix-free subspace
iteration on J^T J with forward- and reverse-mode products, then a Rayleigh-Ritz step, giving
sigma_1 >= ... >= sigma_k), `match` (the descent direction of 1/2 ||f(x) - f(t)||^2 at x0), and
`null` (random directions with the top-k singular subspace projected out). Computed in fp32.
For a linear f(x) = W x every estimate equals its exact value (sigmas of W, ||W v||).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from sweep.probes.base import PairInput, PairResult, Probe, ProbeParams
from sweep.probes.common import embed_fp32, item_generator

Family = Literal["random", "top", "match", "null"]


class LipschitzParams(ProbeParams):
    families: list[Family] = ["random", "top", "match", "null"]
    h: list[float] = [0.01, 0.1, 1.0, 10.0]
    n_random: int = Field(default=4, ge=1, le=1024)
    top_k: int = Field(default=4, ge=1, le=256)
    n_null: int = Field(default=4, ge=1, le=1024)
    iters: int = Field(default=20, ge=1, le=10_000)  # subspace iterations for `top` (and `null`)
    oversample: int = Field(default=4, ge=0, le=256)  # extra iterated vectors: faster, surer convergence

    @field_validator("h", mode="before")
    @classmethod
    def _h_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (int, float, str)) else value

    @field_validator("h")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or any(h <= 0 for h in value):
            raise ValueError("h must be a non-empty list of positive step sizes")
        return value


class LipschitzProbe(Probe):
    name = "lipschitz"
    Params = LipschitzParams

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        for pair in pairs:  # directions of one pair form the batch (chunked to batch_size rows)
            try:
                yield self._one_pair(encoder, pair, batch_size, seed)
            except (RuntimeError, ValueError) as err:  # e.g. out of memory: this pair fails, not the unit
                yield PairResult(pair.pair_id, rows=[], error=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")

    def _one_pair(self, enc: Any, pair: PairInput, batch_size: int, seed: int) -> PairResult:
        p = self.params
        x0 = pair.src.to(enc.device)  # (3, H, W)
        e0 = embed_fp32(enc, x0[None])[0]  # (D,)
        e_t = embed_fp32(enc, pair.tgt.to(enc.device)[None])[0]
        directions: dict[str, torch.Tensor] = {}  # family -> (n, 3, H, W) unit vectors
        sigmas = torch.empty(0)
        need_top = "top" in p.families or "null" in p.families
        if need_top:
            v_top, sigmas = top_singular(enc, x0, p.top_k, p.iters, batch_size, p.oversample, item_generator(seed, "top", pair.pair_id))
            if "top" in p.families:
                directions["top"] = v_top
        if "random" in p.families:
            directions["random"] = _unit(torch.randn((p.n_random, *x0.shape), generator=item_generator(seed, "random", pair.pair_id)).to(x0.device))
        if "match" in p.families:
            directions["match"] = _unit(-_matching_gradient(enc, x0, e_t)[None])
        if "null" in p.families:
            raw = torch.randn((p.n_null, *x0.shape), generator=item_generator(seed, "null", pair.pair_id)).to(x0.device)
            basis = v_top.flatten(1)  # (k, d), orthonormal
            flat = raw.flatten(1)
            directions["null"] = _unit((flat - (flat @ basis.T) @ basis).view_as(raw))

        rows: list[dict[str, Any]] = []
        for family in p.families:
            v = directions[family]
            l_jvp = directional_derivative_norms(enc, x0, v, batch_size)  # (n,)
            l_fd = finite_difference_norms(enc, x0, e0, v, p.h, batch_size)  # (n, len(h))
            for j in range(len(v)):
                for hi, h in enumerate(p.h):
                    jvp, fd = float(l_jvp[j]), float(l_fd[j, hi])
                    rows.append({
                        "family": family, "direction": j, "h": float(h), "l_fd": fd, "l_jvp": jvp,
                        "sigma": float(sigmas[j]) if family == "top" else None,
                        "nonlinearity": abs(fd - jvp) / jvp if jvp > 0 else float("nan"),
                    })
        return PairResult(
            pair_id=pair.pair_id,
            rows=rows,
            embeddings={"src": e0.cpu(), "tgt": e_t.cpu()},
            row_embeddings=[None] * len(rows),
            extra={"sigmas": sigmas.tolist(), "directions": {k: v.cpu() for k, v in directions.items()}},
        )


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of (n, 3, H, W) scaled to unit L2 norm."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)


def _jvp(enc: Any, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n, D) rows J v_i, by forward-mode AD on a batch of copies of x (rows are independent)."""
    with enc.forward_ad_friendly():
        _, out = torch.func.jvp(enc.embed, (x.expand_as(v).contiguous(),), (v,))
    return out.float()


def _vjp(enc: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) rows J^T w_i, by reverse mode on a batch of copies of x."""
    xs = x.expand(len(w), *x.shape).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        e = enc.embed(xs)
        (grad,) = torch.autograd.grad((e * w).sum(), xs)
    return grad


def _chunked(fn: Any, enc: Any, x: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(enc, x, part) for part in rows.split(max(1, batch_size))])


def directional_derivative_norms(enc: Any, x0: torch.Tensor, v: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(n,) ||J v_i||."""
    return _chunked(_jvp, enc, x0, v, batch_size).norm(dim=1)


@torch.no_grad()
def finite_difference_norms(
    enc: Any, x0: torch.Tensor, e0: torch.Tensor, v: torch.Tensor, hs: list[float], batch_size: int
) -> torch.Tensor:
    """(n, len(hs)) ||f(x0 + h v_i) - f(x0)|| / h. No clamping to [0, 1]: that would bend v."""
    steps = torch.tensor(hs, dtype=v.dtype, device=v.device)
    probes = (x0[None, None] + steps.view(1, -1, 1, 1, 1) * v[:, None]).flatten(0, 1)  # (n*len(h), 3, H, W)
    e = embed_fp32(enc, probes, chunk=max(1, batch_size)).view(len(v), len(hs), -1)
    return (e - e0).norm(dim=-1) / steps


def top_singular(
    enc: Any, x0: torch.Tensor, k: int, iters: int, batch_size: int, oversample: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k right singular vectors (k, 3, H, W) and singular values (k,) of J = df/dx at x0,
    by subspace iteration V <- orth(J^T J V) on k + oversample vectors, finished with a
    Rayleigh-Ritz step (the error of sigma_k shrinks like (sigma_{k+oversample+1} / sigma_k)^(2 iters))."""
    d = x0.numel()
    k = min(k, d)
    width = min(k + oversample, d)
    basis = torch.linalg.qr(torch.randn(d, width, generator=generator).to(x0.device)).Q  # (d, width)
    for _ in range(iters):
        jv = _chunked(_jvp, enc, x0, basis.T.reshape(width, *x0.shape), batch_size)  # (width, D)
        jtjv = _chunked(_vjp, enc, x0, jv, batch_size).flatten(1)  # (width, d)
        basis = torch.linalg.qr(jtjv.T).Q
    jv = _chunked(_jvp, enc, x0, basis.T.reshape(width, *x0.shape), batch_size)  # (width, D) = (J V)^T
    _, sigma, rot_t = torch.linalg.svd(jv.T, full_matrices=False)  # J V = U S R^T
    k = min(k, sigma.numel())  # J has rank <= D: no more than D singular values exist
    v_top = (basis @ rot_t.T).T[:k]  # (k, d): V R, ordered by sigma
    return _unit(v_top.reshape(k, *x0.shape)), sigma[:k]


def _matching_gradient(enc: Any, x0: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """(3, H, W) gradient of 1/2 ||f(x) - f(t)||^2 at x0."""
    return _vjp(enc, x0, (embed_fp32(enc, x0[None]) - e_t[None]))[0]
