"""Encoders named `package.module:callable`: a factory returning a torch module that maps pixels
in [0, 1], (B, 3, H, W), to embeddings (B, D), normalising inside. Its input size is the module's
`input_size` attribute (default 3x224x224); its head the module's `classifier`, over the class
names in its `label_names` attribute when it has one."""

from __future__ import annotations

import importlib
import os
import sys

import torch
from torch import nn

from sweep.data.images import Preprocess
from sweep.encoders.encoder import Encoder
from sweep.encoders.weights import with_weights
from sweep.errors import UserError


def load_factory(spec: str, weights: str, embed: str) -> Encoder:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: modules in the working folder are importable
        sys.path.append(os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"cannot import encoder factory {spec!r}: {err}") from None
    if embed != "pre_logits":
        raise UserError(f"embedding point {embed!r} needs a timm ViT; a factory encoder gives its own output")
    # "factory" (or "pretrained"): whatever the factory builds; random:<seed> seeds it; file: loads into it
    module = factory() if weights == "factory" else with_weights(lambda pretrained: factory(), weights)
    if not isinstance(module, nn.Module):
        raise UserError(f"encoder factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
    _, height, width = getattr(module, "input_size", (3, 224, 224))
    head = getattr(module, "classifier", None)
    names = getattr(module, "label_names", None)
    return Encoder(
        name=spec,
        weights=weights,
        embed_point=embed,
        module=module,
        mean=torch.zeros(3),  # the factory normalises inside: identity here
        std=torch.ones(3),
        preprocess=Preprocess(size=(height, width), crop_pct=1.0, interpolation="bicubic"),
        head=head,
        embed_fn=lambda m, x: m(x),
        label_set=None if head is None else "factory",
        label_names=[str(n) for n in names] if names is not None and head is not None else None,
        head_note="" if head is not None else "the factory's module has no `classifier`",
    )
