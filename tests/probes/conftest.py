"""Fixtures of the probe tests: one torch thread, and the tiny random-init ViT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from sweep.encoders import load_encoder


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for the module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    products of a few rows, or batches of a few 32-pixel images, of a tiny model run several
    times faster on one thread than on two on a shared machine (no thread hand-offs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """tests.support.tiny_models:tiny_vit (2 blocks, 32x32 input, seeded), once per module."""
    return load_encoder("tests.support.tiny_models:tiny_vit", device="cpu")
