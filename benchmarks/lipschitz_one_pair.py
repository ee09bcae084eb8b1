"""Baseline for benchmarks/bench_lipschitz.py: the `lipschitz` probe as it was before it batched
across pairs (commit c581846), one pair at a time, the batch holding only that pair's rows
(chunked to `batch_size`). A frozen copy of that code, kept verbatim apart from this docstring,
the class name and importing the parameter model from the current probe (the same parameters).
Not used by the package or the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from sweep.probes.base import PairInput, PairResult, Probe
from sweep.probes.common import embed_fp32, item_generator
from sweep.probes.jacobian import Float64Encoder
from sweep.probes.lipschitz import LipschitzParams
from sweep.probes.match import MatchParams, MatchProbe

_U64_OVER_U32 = 2.0**-29  # unit round-off of float64 over that of float32
_U64 = 2.0**-53
_FLOOR_MARGIN = 64.0  # fd_floor = _FLOOR_MARGIN * (error of one float64 forward) / h


class OnePairLipschitz(Probe):
    name = "lipschitz"
    Params = LipschitzParams

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        f64: Float64Encoder | None = None
        for pair in pairs:  # directions of one pair form the batch (chunked to batch_size rows)
            try:
                f64 = f64 or Float64Encoder(encoder)
                yield self._one_pair(encoder, f64, pair, batch_size, seed)
            except (RuntimeError, ValueError) as err:  # e.g. out of memory: this pair fails, not the unit
                yield PairResult(pair.pair_id, rows=[], error=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")

    def _one_pair(self, enc: Any, f64: "Float64Encoder", pair: PairInput, batch_size: int, seed: int) -> PairResult:
        p = self.params
        x0 = pair.src.to(enc.device, torch.float64)  # (3, H, W)
        e0 = f64.embed(x0[None])[0]  # (D,) float64
        e_t = f64.embed(pair.tgt.to(enc.device, torch.float64)[None])[0]
        e0_fp32 = embed_fp32(enc, pair.src.to(enc.device)[None])[0]
        # error of one float64 forward, estimated from the measured fp32 one
        fwd_err = max(float((e0_fp32.double() - e0).norm()) * _U64_OVER_U32, _U64 * float(e0.norm()))

        directions: dict[str, torch.Tensor] = {}  # family -> (n, 3, H, W) float64 unit vectors
        sigmas = torch.empty(0, dtype=torch.float64)
        per_pair: dict[str, Any] = {}
        jac: torch.Tensor | None = None
        row_basis: torch.Tensor | None = None
        if "null" in p.families:
            jac = jacobian(f64, x0, batch_size)  # (D, d)
            _, svals, vh = torch.linalg.svd(jac, full_matrices=False)  # svals (min(D, d),), vh (., d)
            rtol = p.rank_rtol if p.rank_rtol is not None else max(jac.shape) * torch.finfo(torch.float64).eps
            rank = int((svals > rtol * svals[0]).sum()) if svals[0] > 0 else 0
            row_basis = vh[:rank]  # (r, d) orthonormal basis of J's row space
            k = min(p.top_k, len(svals))
            v_top, sigmas = _unit(vh[:k].reshape(k, *x0.shape)), svals[:k]
            per_pair["rank"] = rank
            per_pair["_svals"] = svals
        elif "top" in p.families or "off_top" in p.families:
            v_top, sigmas = top_singular(f64, x0, p.top_k, p.iters, batch_size, p.oversample, item_generator(seed, "top", pair.pair_id))
        if "top" in p.families:
            directions["top"] = v_top
        if "random" in p.families:
            directions["random"] = _gaussian(p.n_random, x0, item_generator(seed, "random", pair.pair_id))
        if "grad" in p.families:
            directions["grad"] = _unit(-_matching_gradient(f64, x0, e_t)[None])
        if "null" in p.families:
            assert row_basis is not None
            directions["null"] = _project_out(_gaussian(p.n_null, x0, item_generator(seed, "null", pair.pair_id)), row_basis)
        if "off_top" in p.families:
            basis = v_top.flatten(1)  # (k, d), orthonormal
            directions["off_top"] = _project_out(_gaussian(p.n_null, x0, item_generator(seed, "off_top", pair.pair_id)), basis)
        if "match" in p.families:
            found = _matched_direction(enc, pair, p.match, seed)
            per_pair["match_success"] = found is not None
            if found is not None:
                directions["match"] = _unit(found.to(enc.device, torch.float64)[None])

        rows: list[dict[str, Any]] = []
        for family in p.families:
            if family not in directions:
                continue  # `match` without a successful match
            v = directions[family]
            l_jvp = directional_derivative_norms(f64, x0, v, batch_size)  # (n,)
            l_fd = finite_difference_norms(f64, x0, e0, v, p.h, batch_size)  # (n, len(h))
            residual = None
            if family == "null" and jac is not None:
                residual = (v.flatten(1) @ jac.T).norm(dim=1) / float(per_pair["_svals"][0])  # (n,)
            for j in range(len(v)):
                for hi, h in enumerate(p.h):
                    jvp, fd = float(l_jvp[j]), float(l_fd[j, hi])
                    floor = _FLOOR_MARGIN * fwd_err / h
                    deviation = abs(fd - jvp)
                    rows.append({
                        "family": family, "direction": j, "h": float(h), "l_fd": fd, "l_jvp": jvp,
                        "sigma": float(sigmas[j]) if family == "top" else None,
                        "fd_floor": floor,
                        "nonlinearity": deviation / jvp if deviation > floor and jvp > 0 else None,
                        "jv_residual": float(residual[j]) if residual is not None else None,
                        "rank": per_pair.get("rank"),
                        "match_success": per_pair.get("match_success"),
                    })
        extra: dict[str, Any] = {
            "sigmas": sigmas.tolist(),
            "directions": {k: v.cpu() for k, v in directions.items()},
            "fwd_err": fwd_err,
        }
        if "rank" in per_pair:
            extra["rank"] = per_pair["rank"]
            extra["singular_values"] = per_pair["_svals"].cpu()
        if "match_success" in per_pair:
            extra["match_success"] = per_pair["match_success"]
        return PairResult(
            pair_id=pair.pair_id,
            rows=rows,
            embeddings={"src": e0_fp32.cpu(), "tgt": embed_fp32(enc, pair.tgt.to(enc.device)[None])[0].cpu()},  # fp32, as k-NN labels use
            row_embeddings=[None] * len(rows),
            extra=extra,
        )


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of (n, 3, H, W) scaled to unit L2 norm."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, 1, 1, 1)


def _gaussian(n: int, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, H, W) float64 unit Gaussian directions on x0's device."""
    return _unit(torch.randn((n, *x0.shape), generator=generator).to(x0.device, torch.float64))


def _project_out(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Unit rows of v (n, 3, H, W) with the span of the orthonormal rows of basis (k, d) removed
    (twice: one Gram-Schmidt pass leaves round-off of the size of the removed part)."""
    flat = v.flatten(1)
    for _ in range(2):
        flat = flat - (flat @ basis.T) @ basis
    return _unit(flat.view_as(v))


def _jvp(enc: Any, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n, D) rows J v_i, by forward-mode AD on a batch of copies of x (rows are independent)."""
    _, out = torch.func.jvp(enc.embed, (x.expand_as(v).contiguous(),), (v,))
    return out


def _vjp(enc: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) rows J^T w_i, by reverse mode on a batch of copies of x."""
    xs = x.expand(len(w), *x.shape).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        e = enc.embed(xs)
        (grad,) = torch.autograd.grad((e * w).sum(), xs)
    return grad


def _chunked(fn: Any, enc: Any, x: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(enc, x, part) for part in rows.split(max(1, batch_size))])


def jacobian(enc: Any, x0: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(D, d) J = df/dx at x0, row i = J^T e_i, from D reverse-mode products in batches."""
    dim = enc.embed(x0[None]).shape[-1]
    eye = torch.eye(dim, dtype=x0.dtype, device=x0.device)
    return _chunked(_vjp, enc, x0, eye, batch_size).flatten(1)


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
    e = torch.cat([enc.embed(part) for part in probes.split(max(1, batch_size))]).view(len(v), len(hs), -1)
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
    basis = torch.linalg.qr(torch.randn(d, width, generator=generator).to(x0.device, x0.dtype)).Q  # (d, width)
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
    with torch.no_grad():
        diff = enc.embed(x0[None]) - e_t[None]
    return _vjp(enc, x0, diff)[0]


def _matched_direction(enc: Any, pair: PairInput, params: MatchParams, seed: int) -> torch.Tensor | None:
    """x_matched - x0 (3, H, W) from a `match` run on this pair (deterministic: one pair, batch
    of one, the run's seed), or None when that match did not succeed or did not move."""
    (result,) = list(MatchProbe(params).run(enc, [pair], batch_size=1, seed=seed))
    if result.error is not None or not result.rows or not result.rows[0]["success"]:
        return None
    delta = result.images["adv"].double() - pair.src.double()
    return delta if float(delta.norm()) > 0 else None
