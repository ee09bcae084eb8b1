"""Image decoding and preprocessing shared by the single-pair command and the shard reader.

Any image Pillow reads (JPEG, PNG, grayscale, RGBA, palette, any size) becomes an RGB tensor
of shape (3, H, W) with values in [0, 1] at the encoder's input size: resize of the shorter
side to size / crop_pct, then a centre crop, as the model's own data config says.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

Image.MAX_IMAGE_PIXELS = 200_000_000  # ImageNet has large photos; refuse only absurd ones


class ImageDecodeError(ValueError):
    """An image could not be read; the message is one line naming the reason."""


@dataclass(frozen=True)
class Preprocess:
    """The geometry part of a model's data config (no normalisation: the encoder applies it)."""

    size: tuple[int, int] = (224, 224)  # (H, W)
    crop_pct: float = 1.0
    interpolation: str = "bicubic"

    def transform(self) -> T.Compose:
        h, w = self.size
        resize_to = (int(h / self.crop_pct), int(w / self.crop_pct)) if self.crop_pct < 1 else (h, w)
        mode = InterpolationMode(self.interpolation) if self.interpolation in {
            m.value for m in InterpolationMode
        } else InterpolationMode.BICUBIC
        return T.Compose(
            [
                T.ToImage(),
                T.Resize(min(resize_to) if h == w else resize_to, interpolation=mode, antialias=True),
                T.CenterCrop((h, w)),
                T.ToDtype(torch.float32, scale=True),
            ]
        )


def decode_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode encoded bytes to an RGB Pillow image, or raise ImageDecodeError (one line)."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a readable image (unknown format or corrupt data)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageDecodeError(f"{name}: not a readable image ({reason})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any mode; transparency is composited on white, as a viewer shows it."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image_file(path: str | Path) -> Image.Image:
    """Read an image file from disk; a missing or unreadable file raises ImageDecodeError."""
    path = Path(path)
    if not path.exists():
        raise ImageDecodeError(f"{path}: no such file")
    if path.is_dir():
        raise ImageDecodeError(f"{path}: is a folder, not an image")
    return decode_image(path.read_bytes(), str(path))


def preprocess(img: Image.Image, geometry: Preprocess) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] at the model's input size."""
    return geometry.transform()(img).clamp_(0.0, 1.0)


def to_uint8_image(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) values in [0, 1] -> an 8-bit RGB image (values rounded, outside values clipped)."""
    array = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def to_png_bytes(pixels: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_uint8_image(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def quantize_8bit(pixels: torch.Tensor) -> torch.Tensor:
    """What an 8-bit image file holds: clip to [0, 1] and round to multiples of 1/255."""
    return torch.round(pixels.clamp(0, 1) * 255) / 255


def amplified_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| stretched to fill [0, 1] (for showing an invisible change); shape (3, H, W)."""
    diff = (a - b).abs()
    peak = float(diff.max())
    return diff / peak if peak > 0 else diff


__all__ = [
    "ImageDecodeError",
    "Preprocess",
    "amplified_difference",
    "decode_image",
    "load_image_file",
    "preprocess",
    "quantize_8bit",
    "to_png_bytes",
    "to_rgb",
    "to_uint8_image",
]
