"""Wall-clock timing for the probe benchmarks: a function's result and its seconds, with the
GPU synchronised before and after so that queued kernels are counted."""

from __future__ import annotations

import time
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Any) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start
