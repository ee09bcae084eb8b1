"""The Jacobian J = df/dx (D x d) of an encoder at one image, built explicitly, and what is read
off it: the spectrum (every singular value), the numerical rank, the top right singular vectors,
J v, and the projection onto the orthogonal complement of the row space (the null space, the
equivalence directions). Used by the `lipschitz` probe's family `null`.

Two ways (measured in benchmarks/bench_geometry.py and docs/science.md, "The null family's cost"):

- `fp32_jacobian` + `GramRowSpace` (the default): ONE fp32 forward and its D backward rows
  batched (torch.vmap over torch.func.vjp; TF32 off; math attention and patch convolutions as
  matmuls, which vmap batches), then the float64 Gram matrix J J^T
  (D x D): its eigenvalues are sigma_i^2, and the projection J^T U S^-2 U^T J needs no D x d
  factor. Accurate to the fp32 Jacobian's error (about 1e-6 relative on vit_tiny); a null vector
  has ||J v|| / sigma_1 about 5e-9 in float64.
- the float64 Jacobian (D float64 forward + backward rows) + `SvdRowSpace`: the former method.

Pure torch, no I/O.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sweep.probes.vmap_kernels import rows_friendly


# -- the Jacobian's row space (family `null`) --------------------------------------------------
_FP32_RANK_RTOL = 1e-5  # ~30x the fp32 Jacobian's noise floor (3.6e-7 sigma_1 on vit_tiny)
_BLOCK = 16384  # input values per float64 block of the products with an fp32 J
_CPU_CHUNK = 16  # Jacobian rows per vmap'd backward on the CPU (measured on vit_tiny)


class RowSpace:
    """J's spectrum (all singular values, descending), numerical rank, top right singular vectors,
    J v and the projection onto the orthogonal complement of its row space."""

    svals: torch.Tensor
    rank: int

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, D) rows J v_i in float64."""
        raise NotImplementedError

    def top(self, k: int) -> torch.Tensor:
        raise NotImplementedError

    def project_out(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SvdRowSpace(RowSpace):
    """From the SVD of a float64 J (D, d): the former method."""

    def __init__(self, jac: torch.Tensor, rank_rtol: float | None) -> None:
        _, svals, vh = torch.linalg.svd(jac, full_matrices=False)  # svals (min(D, d),), vh (., d)
        rtol = rank_rtol if rank_rtol is not None else max(jac.shape) * torch.finfo(torch.float64).eps
        self.jac, self.svals, self.vh = jac, svals, vh
        self.rank = int((svals > rtol * svals[0]).sum()) if svals[0] > 0 else 0

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.jac.T

    def top(self, k: int) -> torch.Tensor:
        return self.vh[:k]

    def project_out(self, v: torch.Tensor) -> torch.Tensor:
        basis = self.vh[: self.rank]  # (r, d) orthonormal basis of the row space
        for _ in range(2):  # one Gram-Schmidt pass leaves round-off of the size of the removed part
            v = v - (v @ basis.T) @ basis
        return v


class GramRowSpace(RowSpace):
    """From an fp32 (or float64) J (D, d) through its float64 Gram matrix G = J J^T (D x D):
    G = U diag(sigma^2) U^T gives the spectrum, and the right singular vectors are
    J^T u_i / sigma_i, never formed: the projection onto the row space (of rank r) is
    J^T U_r diag(sigma_r^-2) U_r^T J v. Products run in float64 on column blocks of J, so J stays
    in its own precision (0.43 GiB fp32 for ViT-B/16, not 0.86 GiB float64)."""

    def __init__(self, jac: torch.Tensor, rank_rtol: float | None) -> None:
        self.jac = jac
        gram = torch.zeros(jac.shape[0], jac.shape[0], dtype=torch.float64, device=jac.device)
        for block in jac.split(_BLOCK, dim=1):
            b = block.double()
            gram += b @ b.T
        lam, u = torch.linalg.eigh(gram)  # ascending
        lam, u = lam.flip(0).clamp_min(0), u.flip(1)
        self.svals = lam.sqrt()
        self.u = u
        rtol = rank_rtol if rank_rtol is not None else _FP32_RANK_RTOL
        self.rank = int((self.svals > rtol * self.svals[0]).sum()) if self.svals[0] > 0 else 0

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(v), self.jac.shape[0], dtype=torch.float64, device=v.device)
        for block, part in zip(self.jac.split(_BLOCK, dim=1), v.split(_BLOCK, dim=1)):
            out += part.double() @ block.double().T
        return out

    def apply_t(self, y: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, d) rows J^T y_i in float64."""
        return torch.cat([y @ block.double() for block in self.jac.split(_BLOCK, dim=1)], dim=1)

    def top(self, k: int) -> torch.Tensor:
        return self.apply_t(self.u[:, :k].T / self.svals[:k, None].clamp_min(1e-300))

    def project_out(self, v: torch.Tensor) -> torch.Tensor:
        u, s2 = self.u[:, : self.rank], self.svals[: self.rank] ** 2
        for _ in range(2):  # a second pass removes what the first left in round-off
            v = v - self.apply_t(((self.apply(v) @ u) / s2) @ u.T)
        return v


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """TF32 matmuls off (their 10-bit mantissa would swamp the 1e-6 tolerance), restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fp32_jacobian(enc: Any, x0: torch.Tensor, chunk: int) -> torch.Tensor:
    """J = df/dx at x0 (3, H, W), (D, d) fp32: ONE fp32 forward (torch.func.vjp), then its D
    backward rows J^T e_i batched `chunk` at a time (at most 16 on the CPU) by torch.vmap over the
    vjp, TF32 off. Kernels that vmap runs row by row or slowly (fused attention, patch
    convolutions) are swapped for plain ones meanwhile (`rows_friendly`; see docs/science.md,
    "The null family's cost"). (autograd's is_grads_batched was measured 10x
    slower here: it falls back to a per-row loop for some ops.)"""
    if x0.device.type == "cpu":  # a few rows' activations stay in cache: 16 rows 2.9 s, 64 3.3 s, 192 5.1 s
        chunk = min(chunk, _CPU_CHUNK)
    with no_tf32(), rows_friendly(enc):
        out, pullback = torch.func.vjp(lambda z: enc.embed(z)[0], x0[None].float().detach())
        eye = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
        (rows,) = torch.vmap(pullback, chunk_size=max(1, chunk))(eye)
    return rows.flatten(1)


class Float64Encoder:
    """The encoder's function in float64: a deep copy of its module on the same device, its
    normalisation in float64, fused attention off for derivatives (it has no forward-mode one) and
    on again for plain forwards where the model had it (`forward_only`)."""

    def __init__(self, enc: Any) -> None:
        self.module: nn.Module = copy.deepcopy(enc.module).to(enc.device, torch.float64)
        self.module.eval().requires_grad_(False)
        self._fused = [m for m in self.module.modules() if getattr(m, "fused_attn", False) is True]
        for m in self._fused:
            m.fused_attn = False
        self.mean = enc.mean.to(enc.device, torch.float64).view(1, 3, 1, 1)
        self.std = enc.std.to(enc.device, torch.float64).view(1, 3, 1, 1)
        self.embed_fn = enc.embed_fn
        self.device = enc.device

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels -> (B, D) float64 embeddings."""
        return self.embed_fn(self.module, (pixels.double() - self.mean) / self.std).double()

    @torch.no_grad()
    def forward_only(self, pixels: torch.Tensor) -> torch.Tensor:
        """`embed` without derivatives, through fused attention where the model has it (16 rows of
        vit_tiny on a 2-core CPU: 0.39 s against 0.50 s with the math kernel; equal to 2e-15
        relative, float64 round-off)."""
        for m in self._fused:
            m.fused_attn = True
        try:
            return self.embed(pixels)
        finally:
            for m in self._fused:
                m.fused_attn = False
