"""Per-sample metrics shared by the probes: embedding distances and pixel change.

PSNR and SSIM come from torchmetrics (data range 1, per-sample reduction), not hand-written.
All inputs are batched: embeddings (B, D), images (B, 3, H, W).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def sq_l2(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,) squared Euclidean distance."""
    return (e.float() - t.float()).pow(2).sum(dim=-1)


def cosine(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,) cosine similarity."""
    return torch.nn.functional.cosine_similarity(e.float(), t.float(), dim=-1, eps=1e-12)


def rel_dist(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,) ||e - t|| / ||t||."""
    return sq_l2(e, t).sqrt() / t.float().norm(dim=-1).clamp_min(1e-12)


def pixel_change(x: torch.Tensor, x0: torch.Tensor) -> dict[str, torch.Tensor]:
    """Change of x against x0, per sample: L2 and L-inf over all values, PSNR and SSIM (range 1)."""
    x = x.float()
    x0 = x0.float()
    delta = (x - x0).flatten(1)
    psnr = peak_signal_noise_ratio(x, x0, data_range=1.0, reduction="none", dim=(1, 2, 3))
    kernel = _ssim_kernel(min(x.shape[-2:]))
    ssim = structural_similarity_index_measure(
        x, x0, data_range=1.0, reduction="none", kernel_size=kernel, sigma=1.5 * kernel / 11
    )
    return {"pix_l2": delta.norm(dim=1), "pix_linf": delta.abs().amax(dim=1), "psnr": psnr, "ssim": ssim}


def _ssim_kernel(side: int) -> int:
    """The standard 11-pixel Gaussian window, shrunk (odd) for images smaller than that."""
    if side >= 11:
        return 11
    return max(3, side if side % 2 == 1 else side - 1)
