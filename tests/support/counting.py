"""Encoders that count their own passes, for the planner's tests (tests/planning): every image
row a module embeds is counted by kind, as `Passes` (sweep/probes/base.py) counts them: `plain`
forwards without a gradient, `backward` forward + backward to the input, `jvp` forward-mode
products, `rows` backward rows sharing one forward (torch.vmap over torch.func.vjp; that forward
counts in `plain`). The module is the real one (the linear test encoder, a tiny timm ViT); only
its `forward` is wrapped, so the probe under test runs unchanged."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.support.encoders import LinearEncoder
from tests.support.tiny_models import TinyViT


class SharedCounts(dict):  # type: ignore[type-arg]
    """Counts that a deep copy of the module (lipschitz's float64 copy) shares."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedCounts:
        return self


def new_counts() -> SharedCounts:
    return SharedCounts(plain=0, backward=0, jvp=0, rows=0)


def _vmapped() -> int:
    """How many calls a torch.vmap around this one stands for (1 outside vmap)."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    size = 1
    for interpreter in retrieve_all_functorch_interpreters():
        if interpreter.key() == torch._C._functorch.TransformType.Vmap:
            size *= interpreter.batch_size()
    return size


def count_pass(counts: SharedCounts, pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Count one call of a module's forward on `pixels` (B, 3, H, W) that gave `out`."""
    rows = int(pixels.shape[0])
    functorch = torch._C._functorch
    transform = functorch.peek_interpreter_stack()
    under_vjp = transform is not None and transform.key() == functorch.TransformType.Grad  # torch.func.vjp
    if transform is not None and not under_vjp:  # inside torch.func.jvp (tangents vmap'd: many per call)
        counts["jvp"] += rows * _vmapped()
    elif under_vjp:  # torch.func.vjp: one forward, then backward rows (vmap'd: many per forward)
        counts["plain"] += rows

        def on_rows(grad: torch.Tensor) -> None:
            if functorch.is_batchedtensor(grad):  # vmap over a vjp: one call, a chunk of rows
                grad = functorch.get_unwrapped(grad).movedim(functorch.maybe_get_bdim(grad), 0).flatten(0, 1)
            counts["rows"] += int(grad.shape[0])

        out.register_hook(on_rows)
    elif out.requires_grad:  # a forward + backward to the input
        def on_backward(grad: torch.Tensor) -> None:
            counts["backward"] += int(grad.shape[0])

        out.register_hook(on_backward)
    else:
        counts["plain"] += rows
    return out


class CountingEncoder(LinearEncoder):
    """The linear test encoder (tests/support/encoders.py), counting its passes."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = new_counts()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) -> (B, 16)
        return count_pass(self.counts, pixels, super().forward(pixels))


class CountingMicroViT(TinyViT):
    """`micro_vit` (a real timm ViT: 1 block, 16x16 input, D = 24), counting its passes."""

    def __init__(self) -> None:
        super().__init__(size=16, dim=24, depth=1, heads=2)
        self.counts = new_counts()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 16, 16) -> (B, 24)
        return count_pass(self.counts, pixels, super().forward(pixels))


def counting_encoder() -> nn.Module:
    return CountingEncoder()


def counting_micro_vit() -> nn.Module:
    return CountingMicroViT()
