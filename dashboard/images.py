"""PNG helpers for the pair gallery: decode, and amplify an invisible difference (numpy only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_to_array(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB array of a PNG (or any image Pillow reads)."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def array_to_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def amplified_difference(adv_png: bytes, src_png: bytes) -> tuple[bytes, int]:
    """|adv - src| stretched so its largest value is white, as PNG bytes, and that largest
    value in 8-bit steps (0: the images are identical; the result is then all black)."""
    adv = png_to_array(adv_png).astype(np.int16)
    src = png_to_array(src_png).astype(np.int16)
    if adv.shape != src.shape:
        raise ValueError(f"image sizes differ: {adv.shape} vs {src.shape}")
    diff = np.abs(adv - src)
    peak = int(diff.max())
    scaled = diff * (255.0 / peak) if peak else diff
    return array_to_png(np.clip(np.rint(scaled), 0, 255)), peak

