"""Tiny encoder factories for tests and benchmarks, named in specs as
`tests.support.encoders:<factory>`: pixels (B, 3, 8, 8) in [0, 1] -> (B, 16) by a fixed,
seeded linear map (the same weights in every process, so results are reproducible anywhere)."""

from __future__ import annotations

import time

import torch
from torch import nn

INPUT_SIZE = (3, 8, 8)
DIM = 16


class LinearEncoder(nn.Module):
    def __init__(self, seed: int = 0, sleep_s: float = 0.0, fail: bool = False) -> None:
        super().__init__()
        self.input_size = INPUT_SIZE
        generator = torch.Generator().manual_seed(seed)
        d_in = INPUT_SIZE[0] * INPUT_SIZE[1] * INPUT_SIZE[2]
        self.weight = nn.Parameter(torch.randn(DIM, d_in, generator=generator) / d_in**0.5)
        self.sleep_s = sleep_s
        self.fail = fail

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) -> (B, 16)
        if self.fail:
            raise RuntimeError("this encoder always fails (test)")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return pixels.flatten(1) @ self.weight.T


def linear_encoder() -> nn.Module:
    return LinearEncoder()


def slow_linear_encoder() -> nn.Module:
    """Sleeps 20 ms per forward: units take seconds, long enough to kill something mid-unit."""
    return LinearEncoder(sleep_s=0.02)


def failing_encoder() -> nn.Module:
    """Raises in every forward: every unit using it fails."""
    return LinearEncoder(fail=True)


def broken_factory() -> nn.Module:
    """Fails while the encoder is built: every unit using it fails, on every attempt."""
    raise RuntimeError("broken encoder factory (test)")


class GatedLinearEncoder(LinearEncoder):
    """The linear encoder that, when $VITSWEEP_TEST_GATE names a path, writes `<path>.started` at
    its first forward and then waits (up to 5 min) until `<path>` exists: a unit attempt held back
    until a test lets it finish, for reproducing races deterministically."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        import os
        from pathlib import Path

        gate = os.environ.get("VITSWEEP_TEST_GATE")
        if gate and not getattr(self, "_passed", False):
            Path(gate + ".started").touch()
            deadline = time.monotonic() + 300
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._passed = True
        return super().forward(pixels)


def gated_linear_encoder() -> nn.Module:
    """Gated as above; also sleeps $VITSWEEP_TEST_SLEEP_S seconds per forward (default 0)."""
    import os

    return GatedLinearEncoder(sleep_s=float(os.environ.get("VITSWEEP_TEST_SLEEP_S", "0")))


def env_slow_linear_encoder() -> nn.Module:
    """The linear encoder sleeping $VITSWEEP_TEST_SLEEP_S seconds per forward (default 0.02)."""
    import os

    return LinearEncoder(sleep_s=float(os.environ.get("VITSWEEP_TEST_SLEEP_S", "0.02")))


FLOAT64_MESSAGE = "float64 is not supported here (test)\n" + "word " * 100


class Float64FailingEncoder(LinearEncoder):
    """The linear encoder raising (a long, multi-line message) on float64 input, as a device
    without float64 kernels would: fp32 forwards work, the `lipschitz` probe's float64 ones fail."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype == torch.float64:
            raise RuntimeError(FLOAT64_MESSAGE)
        return super().forward(pixels)


class UncopyableEncoder(LinearEncoder):
    """The linear encoder whose module cannot be copied (the `lipschitz` probe copies it to float64)."""

    def __deepcopy__(self, memo: dict) -> UncopyableEncoder:
        raise RuntimeError("this module cannot be copied (test)")


def float64_failing_encoder() -> nn.Module:
    return Float64FailingEncoder()


def uncopyable_encoder() -> nn.Module:
    return UncopyableEncoder()


class SelectEncoder(nn.Module):
    """f(x) = the first 16 pixel values: no arithmetic, so fp32 and float64 agree exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.input_size = INPUT_SIZE
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so the module has a dtype to convert

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) -> (B, 16)
        return pixels.flatten(1)[:, :DIM] * self.scale


def select_encoder() -> nn.Module:
    return SelectEncoder()


class WideLinearEncoder(nn.Module):
    """f(x) = W x with W 300 x 192 (more outputs than pixels): rank(J) = d = 192, no null space."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.input_size = INPUT_SIZE
        generator = torch.Generator().manual_seed(seed)
        d_in = INPUT_SIZE[0] * INPUT_SIZE[1] * INPUT_SIZE[2]
        self.weight = nn.Parameter(torch.randn(300, d_in, generator=generator) / d_in**0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 8, 8) -> (B, 300)
        return pixels.flatten(1) @ self.weight.T


def wide_linear_encoder() -> nn.Module:
    return WideLinearEncoder()
