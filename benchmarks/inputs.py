"""Inputs the probe benchmarks share: seeded random image pairs of an encoder's input size."""

from __future__ import annotations

import torch

from sweep.probes.base import PairInput


def random_pairs(size: tuple[int, ...], n: int, generator: torch.Generator, prefix: str = "p") -> list[PairInput]:
    """`n` pairs of uniform random images (C, H, W) = `size`, drawn from `generator` in order
    (source then target of each pair), named prefix0, prefix1, …"""
    return [PairInput(f"{prefix}{i}", torch.rand(size, generator=generator), torch.rand(size, generator=generator))
            for i in range(n)]
