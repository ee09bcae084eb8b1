"""Test data for the shard tests: an ImageNet-style folder with every awkward image we know of.

    cat/    photo_a.jpg (RGB), photo_b.png (RGB), gray.jpg (L), one_pixel.png (1x1),
            corrupt.jpg (a JPEG cut in half: BAD)
    dog/    rgba.png (RGBA), palette.png (P), my.dotted.name.jpg, empty.jpg (0 bytes: BAD),
            garbage.png (random bytes: BAD)
    large/  huge.jpg (4000x3000)
    notes.txt (not an image: BAD, and at the top level, so unlabelled)
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

GOOD = {
    "cat/photo_a.jpg", "cat/photo_b.png", "cat/gray.jpg", "cat/one_pixel.png",
    "dog/rgba.png", "dog/palette.png", "dog/my.dotted.name.jpg", "large/huge.jpg",
}
BAD = {"cat/corrupt.jpg", "dog/empty.jpg", "dog/garbage.png", "notes.txt"}
CLASSES = ["cat", "dog", "large"]


def _photo(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random picture (compresses like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def image_bytes(seed: int = 0, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    return _encode(Image.fromarray(_photo(*size, seed)), fmt)


def make_messy_folder(root: Path) -> Path:
    """Write the folder described in the module docstring under root; returns root."""
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "cat/photo_a.jpg": image_bytes(1, (64, 48), "JPEG"),
        "cat/photo_b.png": image_bytes(2, (50, 70), "PNG"),
        "cat/gray.jpg": _encode(Image.fromarray(_photo(40, 40, 3)).convert("L"), "JPEG"),
        "cat/one_pixel.png": _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "dog/rgba.png": _encode(Image.fromarray(_photo(48, 48, 4)).convert("RGBA"), "PNG"),
        "dog/palette.png": _encode(Image.fromarray(_photo(48, 32, 5)).convert("P"), "PNG"),
        "dog/my.dotted.name.jpg": image_bytes(6, (30, 60), "JPEG"),
        "large/huge.jpg": _encode(Image.fromarray(_photo(4000, 3000, 7)), "JPEG", quality=70),
        "dog/empty.jpg": b"",
        "dog/garbage.png": np.random.default_rng(8).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "notes.txt": b"labels: cat, dog\n",
    }
    whole = image_bytes(9, (64, 64), "JPEG")
    files["cat/corrupt.jpg"] = whole[: len(whole) // 2]
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    (root / ".DS_Store").write_bytes(b"hidden: skipped silently")
    assert set(files) == GOOD | BAD
    return root


def file_count(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))
