"""The authors' `match` loop, written once: the reference the `match` probe's paper preset is
tested against (tests/probes/test_match.py) and timed against (benchmarks/bench_match.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def authors_match_loop(encoder, src: torch.Tensor, tgt: torch.Tensor, lr: float, tau: float, min_cos: float,
                       max_steps: int) -> tuple[torch.Tensor, int]:
    """The authors' loop, one pair (C, H, W), fp32, with its extra no-grad forward per step for the
    stop test (||f(x) - f(t)||^2 < tau and cos > min_cos): plain gradient descent on the mean
    squared error in the encoder's normalised space, clamped to the source's global [min, max].
    Returns the image (C, H, W, pixels) and the number of steps taken."""
    x = encoder.normalize(src[None].to(encoder.device)).clone()
    lo, hi = x.min(), x.max()
    with torch.no_grad():
        e_t = encoder.embed(tgt[None].to(encoder.device))
    steps = 0
    for _ in range(max_steps):
        x.requires_grad_(True)
        loss = F.mse_loss(encoder.embed_normalized(x), e_t)
        (grad,) = torch.autograd.grad(loss, x)
        x = torch.clamp(x.detach() - lr * grad, lo, hi)
        steps += 1
        with torch.no_grad():
            e = encoder.embed_normalized(x)
            if ((e - e_t) ** 2).sum() < tau and F.cosine_similarity(e, e_t).item() > min_cos:
                break
    return encoder.denormalize(x)[0], steps
