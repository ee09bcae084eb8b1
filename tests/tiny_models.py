"""Small, fast encoders for the probe tests, named as `tests.tiny_models:<factory>`.

`tiny_vit` is a real timm VisionTransformer (2 blocks, 32x32 input, seeded random weights) that
maps pixels in [0, 1] to its pre-logits embedding, with its classifier exposed as `classifier`.
"""

from __future__ import annotations

import timm.models.vision_transformer as vt
import torch
from torch import nn


class TinyViT(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vit = vt.VisionTransformer(
                img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10
            )
        self.input_size = (3, 32, 32)
        self.classifier = self.vit.head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) in [0, 1] -> (B, 48)
        x = (pixels - 0.5) / 0.5
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def tiny_vit() -> nn.Module:
    return TinyViT()
