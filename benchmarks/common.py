"""What the benchmarks share: wall-clock timing with the GPU synchronised, peak memory, and seeded
random image pairs. Run the benchmarks from the repository root as modules
(`python -m benchmarks.bench_match`), so that `sweep`, `benchmarks` and `tests.support` import
without any sys.path edit."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from sweep.probes.base import PairInput


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Any) -> tuple[Any, float]:
    """`fn()`'s result and its seconds, with the GPU synchronised before and after so that queued
    kernels are counted."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    """GPU: torch.cuda.max_memory_allocated; CPU: the process's peak RSS (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_pairs(size: tuple[int, ...], n: int, generator: torch.Generator, prefix: str = "p") -> list[PairInput]:
    """`n` pairs of uniform random images (C, H, W) = `size`, drawn from `generator` in order
    (source then target of each pair), named prefix0, prefix1, …"""
    return [PairInput(f"{prefix}{i}", torch.rand(size, generator=generator), torch.rand(size, generator=generator))
            for i in range(n)]
