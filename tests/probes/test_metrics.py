"""The pixel-change and distance metrics (sweep/probes/metrics.py) against formulas written out here.

SSIM is recomputed in plain torch with torchmetrics' conventions, which differ from
scikit-image's at the border: the image is reflect-padded by the Gaussian window's radius
(radius int(3.5 sigma + 0.5), so the window size follows sigma) and the SSIM map is averaged
over every pixel, border included (scikit-image drops the border). Flat images give SSIM in
closed form, (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 x data range)^2, which pins the data range.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sweep.probes import metrics


def ssim_reference(x: torch.Tensor, y: torch.Tensor, sigma: float, data_range: float = 1.0) -> float:
    """SSIM of two (3, H, W) images: Gaussian window (sigma), reflect padding, mean over all pixels."""
    r = int(3.5 * sigma + 0.5)
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-k**2 / (2 * sigma**2))
    g = g / g.sum()
    w = g[:, None] * g[None, :]

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = F.pad(z[None], (r, r, r, r), mode="reflect")[0]
        _, h, wd = z.shape
        out = torch.zeros(z.shape[0], h - 2 * r, wd - 2 * r, dtype=torch.float64)
        for i in range(2 * r + 1):
            for j in range(2 * r + 1):
                out += w[i, j] * z[:, i : i + h - 2 * r, j : j + wd - 2 * r]
        return out

    x, y = x.double(), y.double()
    mx, my = blur(x), blur(y)
    sxx, syy = (blur(x * x) - mx * mx).clamp_min(0), (blur(y * y) - my * my).clamp_min(0)
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return float(((2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean())


@pytest.mark.parametrize("size", [5, 8, 16, 24])
def test_ssim_against_a_plain_ssim_with_the_window_shrunk_for_small_images(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    x0 = 0.3 + 0.4 * torch.rand(2, 3, size, size, generator=g)  # low contrast: the data range matters
    x = (x0 + 0.05 * torch.randn(2, 3, size, size, generator=g)).clamp(0, 1)
    window = 11 if size >= 11 else (size if size % 2 else size - 1)
    got = metrics.pixel_change(x, x0)["ssim"]
    for i in range(2):
        assert float(got[i]) == pytest.approx(ssim_reference(x[i], x0[i], 1.5 * window / 11), abs=2e-6)


@pytest.mark.parametrize(("a", "b"), [(0.01, 0.02), (0.5, 0.3)])
def test_ssim_and_psnr_of_flat_images_in_closed_form(a: float, b: float) -> None:
    x0, x = torch.full((1, 3, 12, 12), a), torch.full((1, 3, 12, 12), b)
    got = metrics.pixel_change(x, x0)
    c1 = 0.01**2  # data range 1
    assert float(got["ssim"][0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    assert float(got["psnr"][0]) == pytest.approx(10 * math.log10(1 / (a - b) ** 2), rel=1e-5)
    assert float(got["pix_linf"][0]) == pytest.approx(abs(a - b), rel=1e-5)
    assert float(got["pix_l2"][0]) == pytest.approx(abs(a - b) * math.sqrt(3 * 144), rel=1e-5)


def test_cosine_and_rel_dist_of_small_vectors() -> None:
    """Tiny embeddings keep their true cosine (the guard against zero is 1e-12, not 1e-8)."""
    e = torch.tensor([[3e-10, 4e-10, 0.0], [0.3, 0.4, 0.0]])
    t = torch.tensor([[0.0, 4e-10, 3e-10], [0.0, 0.4, 0.3]])
    assert metrics.cosine(e, t).tolist() == pytest.approx([16 / 25, 16 / 25], rel=1e-5)
    assert metrics.rel_dist(e, t).tolist() == pytest.approx([math.sqrt(18) / 5] * 2, rel=1e-5)
    assert metrics.cosine(torch.zeros(1, 3), t[1:]).tolist() == [0.0]
