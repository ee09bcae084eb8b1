"""Gallery triples: source | matched | target | amplified difference, from the `images` table.

The difference image is |adv − src| per pixel and channel (8-bit), multiplied by a gain that maps
the largest change to 255 (the gain is reported, so a reader knows how small the change was).
Pure Pillow and numpy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Triple:
    """One gallery row: four PNGs and the numbers that describe the match."""

    pair_id: str
    caption: str
    src_png: bytes
    adv_png: bytes
    tgt_png: bytes
    diff_png: bytes
    gain: float
    max_diff: int  # largest |adv - src| in 8-bit levels


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8 RGB array."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def amplified_difference(src: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(|adv − src| · gain clipped to 8 bits, gain, max |adv − src|); gain maps the max to 255
    (1 when the images are equal). Images of different sizes are compared at the source's size."""
    if adv.shape != src.shape:
        adv = np.asarray(Image.fromarray(adv).resize((src.shape[1], src.shape[0])), dtype=np.uint8)
    diff = np.abs(adv.astype(np.int16) - src.astype(np.int16))
    max_diff = int(diff.max()) if diff.size else 0
    gain = 255.0 / max_diff if max_diff > 0 else 1.0
    amplified = np.clip(np.rint(diff * gain), 0, 255).astype(np.uint8)
    return amplified, gain, max_diff


def make_triple(pair_id: str, caption: str, src_png: bytes, adv_png: bytes,
                tgt_png: bytes) -> Triple:
    """A gallery row from the stored PNG bytes."""
    amplified, gain, max_diff = amplified_difference(decode_png(src_png), decode_png(adv_png))
    return Triple(pair_id, caption, bytes(src_png), bytes(adv_png), bytes(tgt_png),
                  encode_png(amplified), gain, max_diff)
