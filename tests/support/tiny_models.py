"""Small, fast encoders for the probe tests, named as `tests.support.tiny_models:<factory>`.

`tiny_vit` is a real timm VisionTransformer (2 blocks, 32x32 input, seeded random weights) that
maps pixels in [0, 1] to its pre-logits embedding, with its classifier exposed as `classifier`.
`micro_vit` is the same kind of model smaller still (1 block, 16x16 input, 24-d embedding), for
tests that run many times (mutation testing).
"""

from __future__ import annotations

import timm.models.vision_transformer as vt
import torch
from torch import nn


class TinyViT(nn.Module):
    def __init__(self, seed: int = 0, size: int = 32, dim: int = 48, depth: int = 2, heads: int = 3) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vit = vt.VisionTransformer(
                img_size=size, patch_size=8, embed_dim=dim, depth=depth, num_heads=heads, num_classes=10
            )
        self.input_size = (3, size, size)
        self.classifier = self.vit.head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, size, size) in [0, 1] -> (B, dim)
        x = (pixels - 0.5) / 0.5
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def tiny_vit() -> nn.Module:
    return TinyViT()


def micro_vit() -> nn.Module:
    return TinyViT(size=16, dim=24, depth=1, heads=2)


def named_tiny_vit() -> torch.nn.Module:
    """`tiny_vit` whose classifier's classes have names (a factory head with `label_names`)."""
    module = tiny_vit()
    module.label_names = [f"class {i}" for i in range(10)]
    return module
