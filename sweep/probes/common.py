"""Small helpers every probe uses: precision policy, per-item seeding, batched clean embedding,
and label columns from the classifier head."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

from sweep.probes.labels import head_top1

Precision = Literal["auto", "fp32", "bf16"]


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA ("auto" or "bf16"); plain fp32 on the CPU or when asked."""
    if precision == "fp32" or device.type != "cuda":
        if precision == "bf16" and device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def item_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator seeded by the run seed and the item's identity (stable across processes),
    so an item's random draws do not depend on which batch it lands in."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)


@torch.no_grad()
def embed_fp32(encoder: Any, pixels: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(B, 3, H, W) pixels -> (B, D) fp32 embeddings, no autocast (the reported numbers)."""
    return torch.cat([encoder.embed(part) for part in pixels.split(chunk)]) if len(pixels) else pixels.new_zeros(0)


@torch.no_grad()
def head_labels(encoder: Any, embeddings: torch.Tensor) -> tuple[list[Any], list[Any]]:
    """Top-1 class and probability per row, or Nones when the encoder has no classifier head."""
    classes, probs = head_top1(encoder.classify(embeddings))
    if not classes:
        return [None] * len(embeddings), [None] * len(embeddings)
    return classes, probs


@torch.no_grad()
def zeroshot_labels(encoder: Any, embeddings: torch.Tensor) -> tuple[list[Any], list[Any]]:
    """Zero-shot CLIP top-1 class and probability per row (from the setting's classifier,
    `encoder.zero_shot`), or Nones when the setting has no `text:`."""
    zero_shot = getattr(encoder, "zero_shot", None)
    if zero_shot is None:
        return [None] * len(embeddings), [None] * len(embeddings)
    return zero_shot.labels(embeddings)


def floats(t: torch.Tensor) -> Iterator[float]:
    return iter(t.detach().double().cpu().tolist())
