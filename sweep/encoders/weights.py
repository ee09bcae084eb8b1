"""Weight sources of an encoder: `pretrained`, `random:<seed>` (a seeded initialisation) or
`file:<path>` (a local checkpoint, .safetensors or a torch state dict)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sweep.errors import UserError

WEIGHT_HELP = "use --weights random:<seed> for a seeded random initialisation or file:<path> for a local checkpoint"


def with_weights(build: Callable[[bool], nn.Module], weights: str) -> nn.Module:
    """Build a module from a weight source: `pretrained` (build(True)), `random:<seed>` (a
    seeded build(False)) or `file:<path>` (build(False), then the file's state dict)."""
    if weights == "pretrained":
        return build(True)
    if weights.startswith("random:"):
        seed_text = weights.split(":", 1)[1]
        if not seed_text.isdigit():
            raise UserError(f"bad weight source {weights!r}: the seed must be a whole number ({WEIGHT_HELP})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed_text))
            return build(False)
    if weights.startswith("file:"):
        path = Path(weights[5:])
        state = read_checkpoint(path)
        module = build(False)
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            first = " ".join(str(err).split())[:200]
            raise UserError(f"weights file {str(path)!r} does not fit the model: {first}") from None
        return module
    raise UserError(f"unknown weight source {weights!r}: use pretrained, random:<seed> or file:<path>")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read weights file {str(path)!r}: {' '.join(str(err).split())[:200]}") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"weights file {str(path)!r} holds no state dict")
    return state
