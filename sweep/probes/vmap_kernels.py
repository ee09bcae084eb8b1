"""Kernels swapped for plain ones while the fp32 Jacobian's D backward rows run under torch.vmap
(sweep/probes/jacobian.py, `fp32_jacobian`). Each swap gives the same function and derivative up
to round-off; measured on vit_tiny, 2-core CPU (docs/science.md, "The null family's cost"):

- fused attention -> the math one: the fused CPU backward has no vmap batching rule, so vmap
  runs it row by row (3.35 s against 3.02 s per Jacobian unloaded, 16 rows at a time; but
  22-91 s against 5-19 s at load average 3-5, 64 rows at a time);
- a patch convolution (kernel = stride, no padding) -> a matmul on the unfolded patches (3.42 s
  against 3.02 s per Jacobian; under the profiler the conv backward took 1.3 s of 5.8 s).

(Tried and not kept: exact GELU linearised, its slope gelu'(x) computed once in the forward
rather than by vmap's gelu_backward for every row: 2.84 s against 2.92 s per Jacobian, within
the noise; both are bound by memory traffic.)

Every swap is undone on leaving, also on error. Pure torch, no I/O.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def rows_friendly(enc: Any) -> Iterator[None]:
    """All swaps on `enc.module` (and fused attention off through the encoder's
    `forward_ad_friendly`, where it has one)."""
    attention = getattr(enc, "forward_ad_friendly", contextlib.nullcontext)
    with attention(), swapped_forwards(enc.module):
        yield


@contextlib.contextmanager
def swapped_forwards(module: nn.Module) -> Iterator[None]:
    """Every patch convolution of `module` runs as a matmul while inside (weights shared),
    restored after."""
    swaps: list[tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = []
    for m in module.modules():
        if "forward" in vars(m):  # already patched by someone else: left alone
            continue
        if _is_patch_conv(m):
            swaps.append((m, _patch_matmul(m)))
    for m, forward in swaps:
        m.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m, _ in swaps:
            del m.forward


def _is_patch_conv(m: nn.Module) -> bool:
    """A Conv2d that cuts its input into disjoint patches (kernel = stride, no padding): a matmul."""
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == tuple(m.stride)
            and m.padding in ((0, 0), "valid") and tuple(m.dilation) == (1, 1) and m.groups == 1)


def _patch_matmul(conv: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """conv's forward as a matmul: (B, C, H, W) -> (B, O, H // ph, W // pw)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        (ph, pw), (b, c, h, w) = conv.kernel_size, x.shape
        gh, gw = h // ph, w // pw
        x = x[:, :, : gh * ph, : gw * pw]  # a conv drops the rows and columns past the last patch
        patches = x.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh, gw, c * ph * pw)
        out = patches @ conv.weight.reshape(conv.out_channels, -1).T  # (B, gh, gw, O)
        if conv.bias is not None:
            out = out + conv.bias
        return out.permute(0, 3, 1, 2)

    return forward
