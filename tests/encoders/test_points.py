"""Embedding points against the token sequence computed directly with the ViT's own blocks.

`cls:<b>` is the class token after block b (0-based; negative counts from the end) and
`mean_patch:<b>` the mean of the patch tokens (class token left out) after block b, both before
the final norm; `pre_logits` is the final-normed class token. The reference below builds the
token sequence by hand (patch embedding, class token, position embedding) and runs the blocks
one by one, so it shares nothing with the encoder's own path (timm's forward_intermediates).
"""

from __future__ import annotations

import pytest
import torch

from sweep.encoders import load_encoder

MODEL = "vit_tiny_patch16_224"  # 12 blocks, width 192, one class token


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def _tokens_after_each_block(encoder, pixels: torch.Tensor) -> list[torch.Tensor]:
    """(B, 1 + N, C) after every block, computed step by step."""
    vit = encoder.module
    x = (pixels - encoder.mean.view(1, 3, 1, 1)) / encoder.std.view(1, 3, 1, 1)
    with torch.no_grad():
        patches = vit.patch_embed(x)  # (B, N, C)
        tokens = torch.cat([vit.cls_token.expand(len(x), -1, -1), patches], dim=1) + vit.pos_embed
        out = []
        for block in vit.blocks:
            tokens = block(tokens)
            out.append(tokens)
    return out


@pytest.mark.parametrize("embed", ["cls:0", "cls:5", "cls:-1", "mean_patch:0", "mean_patch:3", "mean_patch:-1",
                                   "pre_logits"])
def test_embedding_point_equals_the_block_output(pixels: torch.Tensor, embed: str) -> None:
    encoder = load_encoder(MODEL, "random:0", embed=embed, device="cpu")
    assert tuple(encoder.mean.tolist()) == (0.5, 0.5, 0.5)  # the model's own normalisation
    per_block = _tokens_after_each_block(encoder, pixels)
    assert len(per_block) == 12
    if embed == "pre_logits":
        want = encoder.module.norm(per_block[-1])[:, 0]
    else:
        kind, block = embed.split(":")
        tokens = per_block[int(block)]  # -1: the last block
        want = tokens[:, 0] if kind == "cls" else tokens[:, 1:].mean(dim=1)
    with torch.no_grad():
        got = encoder(pixels)
    assert got.shape == want.shape == (2, 192)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_points_differ_from_their_neighbours(pixels: torch.Tensor) -> None:
    """The reference itself tells the candidates apart (so the test above can fail): the class
    token differs from the mean patch, the first patch from the mean, block b from block b + 1."""
    encoder = load_encoder(MODEL, "random:0", embed="cls:3", device="cpu")
    tokens = _tokens_after_each_block(encoder, pixels)
    assert not torch.allclose(tokens[3][:, 0], tokens[4][:, 0], atol=1e-3)
    assert not torch.allclose(tokens[3][:, 1:].mean(1), tokens[3][:, 1], atol=1e-3)
    assert not torch.allclose(tokens[3][:, 1:].mean(1), tokens[3].mean(1), atol=1e-4)
    assert not torch.allclose(encoder.module.norm(tokens[3])[:, 0], tokens[3][:, 0], atol=1e-3)
