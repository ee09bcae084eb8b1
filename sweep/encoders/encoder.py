"""The Encoder: a frozen embedding function with the model's own input geometry and
normalisation, whatever built it (a timm model, `sweep.encoders.timm_models`, or a
`package.module:callable` factory, `sweep.encoders.factory`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sweep.data.images import Preprocess


@dataclass
class Encoder:
    """A frozen embedding function with the model's own input geometry and normalisation."""

    name: str
    weights: str
    embed_point: str
    module: nn.Module  # maps *normalised* input (B, 3, H, W) to the backbone's output
    mean: torch.Tensor  # (3,)
    std: torch.Tensor  # (3,)
    preprocess: Preprocess
    head: nn.Module | None = None  # classifier on the pre-logits embedding, when the model has one
    embed_fn: Any = None  # callable(module, x_normalised) -> (B, D)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    loop_fn: Any = None  # the probes' hot-loop variant of embed_fn (torch.compile'd when asked)
    label_set: str | None = None  # what the head classifies over ("imagenet-1k", ...); None without a head
    label_names: list[str] | None = None  # class index -> name, where the label set has names
    head_note: str = ""  # why there is no head (empty when there is one)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, *self.preprocess.size)

    @property
    def has_head(self) -> bool:
        return self.head is not None

    def class_names(self, classes: list[int | None]) -> list[str | None]:
        """Class indices of the head -> their names (None where unknown or out of range)."""
        names = self.label_names or []
        return [names[c] if c is not None and 0 <= c < len(names) else None for c in classes]

    def to(self, device: torch.device | str) -> "Encoder":
        self.device = torch.device(device)
        self.module.to(self.device)
        if self.head is not None:
            self.head.to(self.device)
        self.mean = self.mean.to(self.device)
        self.std = self.std.to(self.device)
        return self

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> the model's normalised input space."""
        return (pixels - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.view(1, 3, 1, 1) + self.mean.view(1, 3, 1, 1)

    def embed_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised input -> (B, D) embedding (float32 out, whatever autocast did)."""
        return self.embed_fn(self.module, x).float()

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) embedding."""
        return self.embed_normalized(self.normalize(pixels))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed(pixels)

    def loop_embed_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """As embed_normalized, through the compiled function when `compile()` was called.
        Only the probes' gradient steps use it; the reported fp32 numbers use the eager path."""
        return (self.loop_fn or self.embed_fn)(self.module, x).float()

    def loop_embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.loop_embed_normalized(self.normalize(pixels))

    def compile(self, mode: str | None = None) -> "Encoder":
        """torch.compile the hot loop's forward (and, through AOTAutograd, its backward)."""
        self.loop_fn = torch.compile(self.embed_fn, mode=mode)
        return self

    def classify(self, embedding: torch.Tensor) -> torch.Tensor | None:
        """(B, D) pre-logits embedding -> (B, classes) logits, or None without a head."""
        if self.head is None or self.embed_point != "pre_logits":
            return None
        return self.head(embedding).float()

    @contextlib.contextmanager
    def forward_ad_friendly(self) -> Iterator[None]:
        """Switch fused attention off while forward-mode AD (jvp) runs: PyTorch's fused
        scaled-dot-product kernels have no forward-mode derivative."""
        switched = [m for m in self.module.modules() if getattr(m, "fused_attn", False) is True]
        for m in switched:
            m.fused_attn = False
        try:
            yield
        finally:
            for m in switched:
                m.fused_attn = True

    def provenance(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "weights": self.weights,
            "embed": self.embed_point,
            "input_size": list(self.input_size),
            "has_head": self.has_head,
            "label_set": self.label_set,
            "head_note": self.head_note,
        }
