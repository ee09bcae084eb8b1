"""Negative-control encoders: `control:gaussian:<reference>`, a seeded Gaussian linear map with a
model's input and embedding shapes.

    control:gaussian:vit_base_patch16_224                   # a timm model's shapes
    control:gaussian:tests.support.encoders:linear_encoder  # a factory's shapes

listed in a spec beside the model (same shards, pairing, seed and probe settings), with weights
`random:<seed>`:

    models:
      - {name: vit_base_patch16_224, weights: pretrained}
      - {name: "control:gaussian:vit_base_patch16_224", weights: "random:0"}

The map is f(x) = W x on [0, 1] pixels flattened to d = 3 H W values (no normalisation, no bias),
W (D x d) with i.i.d. N(0, 1/d) entries from `torch.Generator().manual_seed(seed)` (generated on
the CPU in row blocks, so the same seed gives the same W on every device), D the reference's
embedding size at the embedding point asked for. The reference is built without weights (a timm
model on the meta device; a factory as it builds itself) and traced once for D. It has no
classifier head. A Gaussian map has no learning at all: any check it passes is passed by
dimension counting (docs/science.md, Verdicts), which is why the verdicts judge such checks
against it (analysis/claims.py: `control_estimate`).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from sweep.data.images import Preprocess
from sweep.encoders.encoder import Encoder
from sweep.errors import UserError

PREFIX = "control:"
KINDS = ("gaussian",)
HEAD_NOTE = "control: a Gaussian linear map has no classifier"
_SEED = re.compile(r"^random:(\d+)$")
_BLOCK_ROWS = 64  # rows of W generated at a time


def is_control(model: str) -> bool:
    return model.startswith(PREFIX)


def parse_control(model: str) -> tuple[str, str]:
    """`control:<kind>:<reference>` -> (kind, reference); UserError when malformed."""
    _, _, rest = model.partition(PREFIX)
    kind, _, reference = rest.partition(":")
    if kind not in KINDS or not reference:
        raise UserError(f"control encoder {model!r}: use control:gaussian:<model> (a timm name "
                        f"or a package.module:callable factory)")
    return kind, reference


def control_seed(model: str, weights: str) -> int:
    match = _SEED.match(weights)
    if match is None:
        raise UserError(f"control encoder {model!r}: weights must be random:<seed>, not {weights!r}")
    return int(match.group(1))


class GaussianControl(nn.Module):
    """f(x) = W x on [0, 1] pixels (B, 3, H, W) -> (B, D), W (D, d) ~ N(0, 1/d), seeded."""

    def __init__(self, input_size: tuple[int, int, int], dim: int, seed: int) -> None:
        super().__init__()
        self.input_size = tuple(int(x) for x in input_size)
        d = self.input_size[0] * self.input_size[1] * self.input_size[2]
        generator = torch.Generator().manual_seed(int(seed))
        weight = torch.empty(int(dim), d)
        for start in range(0, int(dim), _BLOCK_ROWS):
            rows = weight[start:start + _BLOCK_ROWS]
            rows.copy_(torch.randn(rows.shape, generator=generator))
        self.weight = nn.Parameter(weight / d**0.5, requires_grad=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1) @ self.weight.T


def reference_shapes(reference: str, embed: str) -> tuple[tuple[int, int, int], int]:
    """((3, H, W), D) of the reference model at `embed`, without its weights."""
    if ":" in reference:
        from sweep.encoders.factory import load_factory

        enc = load_factory(reference, "factory", embed)
        x = torch.zeros(1, *enc.input_size)
    else:
        from sweep.encoders.timm_models import load_timm

        enc = load_timm(reference, "random:0", embed, meta=True)
        x = torch.empty(1, *enc.input_size, device="meta")
    with torch.no_grad():
        out = enc.embed_fn(enc.module, enc.normalize(x) if x.device.type != "meta" else x)
    return tuple(enc.input_size), int(out.shape[-1])


def load_control(model: str, weights: str, embed: str) -> Encoder:
    """The control encoder `model` (control:gaussian:<reference>) with weights random:<seed>."""
    _, reference = parse_control(model)
    seed = control_seed(model, weights)
    input_size, dim = reference_shapes(reference, embed)
    module = GaussianControl(input_size, dim, seed)
    return Encoder(
        name=model,
        weights=weights,
        embed_point=embed,
        module=module,
        mean=torch.zeros(3),  # the map reads [0, 1] pixels as they are
        std=torch.ones(3),
        preprocess=Preprocess(size=(input_size[1], input_size[2]), crop_pct=1.0, interpolation="bicubic"),
        head=None,
        embed_fn=lambda m, x: m(x),
        label_set=None,
        label_names=None,
        head_note=HEAD_NOTE,
    )
