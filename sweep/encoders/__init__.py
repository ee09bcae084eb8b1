"""Encoders (the public API: `load_encoder`, `describe_head`, `check_timm_model`, `Encoder`).

An encoder maps pixels in [0, 1], shape (B, 3, H, W), to embeddings (B, D). It is named either
as a timm model `name[.tag]` (weights `pretrained`, `random:<seed>` or `file:<path>`) or as a
`package.module:callable` factory returning a torch module that already maps [0, 1] pixels to
(B, D). The timm model's own normalisation and input size are applied here; its parameters are
frozen, so no weight gradient is ever computed.

Embedding points for timm ViTs: `pre_logits` (default), `cls:<block>`, `mean_patch:<block>`.

Heads: an encoder has a head for labels only when it is a classifier over a known label set.
For a timm model that is ImageNet-1k / -12k / -21k / -22k, read from timm's metadata (the
pretrained config's `label_names`, else the class count as `timm.data.infer_imagenet_subset`
maps it); a CLIP / SigLIP image tower that was not fine-tuned on a label set has a "head" that is
the image-text projection (512-way for `vit_base_patch16_clip_224.openai`), which is not a
classifier: such encoders get no head, and `head_note` says why. A factory encoder's head is its
module's `classifier` attribute, over the class names in its `label_names` attribute when it has
one. The names of a head's classes (`class_names`) come from timm's offline ImageNet metadata.
The user can override the choice (`head=` of `load_encoder`, `head:` of a spec's model): `none`
switches head labels off; a label set timm knows (`imagenet-1k`, `imagenet-21k`, ...) or
`file:<path>` (one class name per line) names the classes of a head whose size matches.

Random-init weights: a timm model under `random:<seed>` has a classifier whose argmax is not a
class, so with `head: auto` it gets no head labels (`head_note` says so: `RANDOM_HEAD_NOTE`); an
explicit `head:` label set in the spec still wins. (A factory's `random:<seed>` only seeds the
factory's own build, which may load its weights: its `classifier` stays its head.)

Negative controls: `control:gaussian:<reference>` (weights `random:<seed>`) is a seeded Gaussian
linear map with the reference model's input and embedding shapes (`sweep.encoders.control`).

The package: `encoder` (the Encoder), `timm_models` (timm models: the only module that imports
timm), `factory` (`package.module:callable` encoders), `weights` (weight sources), `control`
(negative-control encoders).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sweep.encoders.control import HEAD_NOTE as CONTROL_HEAD_NOTE
from sweep.encoders.control import is_control, load_control, parse_control
from sweep.encoders.encoder import Encoder
from sweep.encoders.factory import load_factory
from sweep.encoders.timm_models import (
    check_timm_model,
    label_set_names,
    load_timm,
    suggest_models,
    timm_label_set,
)
from sweep.encoders.weights import WEIGHT_HELP
from sweep.errors import UserError

_load_timm = load_timm  # the name sweep/run/calibrate.py imports

_EMBED_RE = re.compile(r"^(pre_logits|(cls|mean_patch):(-?\d+))$")
RANDOM_HEAD_NOTE = "random-init weights: a random head's argmax is not a class (head labels off)"


def _random_head_off(encoder: Encoder) -> None:
    """A timm model at random init: no head labels (its classifier's argmax names no class)."""
    if encoder.weights.startswith("random:") and encoder.head is not None:
        encoder.head, encoder.label_set, encoder.label_names = None, None, None
        encoder.head_note = RANDOM_HEAD_NOTE


def load_encoder(
    model: str,
    weights: str = "random:0",
    embed: str = "pre_logits",
    device: str | torch.device | None = None,
    head: str = "auto",
) -> Encoder:
    """Build an encoder from a timm name[.tag] or a `package.module:callable` factory.
    head: `auto` (see the module docstring), `none`, a label set timm knows, or `file:<path>`."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        # fp32 must mean fp32 in the reported re-checks: cuDNN convolutions default to TF32.
        # (bf16 autocast in the probes' hot loop is unaffected.)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if not _EMBED_RE.match(embed):
        raise UserError(f"unknown embedding point {embed!r} (use pre_logits, cls:<block> or mean_patch:<block>)")
    if is_control(model):
        encoder = load_control(model, weights, embed)
        if head not in ("auto", "none"):
            raise UserError(f"head {head!r}: {model} is a control encoder with no classifier")
    elif ":" in model:
        encoder = load_factory(model, weights, embed)
    else:
        encoder = load_timm(model, weights, embed)
        if head == "auto":
            _random_head_off(encoder)
    if head != "auto" and not is_control(model):
        _name_head(encoder, head)
    encoder.module.eval().requires_grad_(False)
    if encoder.head is not None:
        encoder.head.eval().requires_grad_(False)
    return encoder.to(device)


def describe_head(model: str, weights: str = "random:0", embed: str = "pre_logits", head: str = "auto") -> dict[str, Any]:
    """{"label_set", "note"} of an encoder's head labels without loading weights: a timm model is
    built on the meta device (no memory, no download), a factory is built as `load_encoder` would."""
    if is_control(model):
        parse_control(model)
        return {"label_set": None, "note": CONTROL_HEAD_NOTE}
    if ":" in model:
        encoder = load_encoder(model, weights, embed, device="cpu", head=head)
    else:
        encoder = load_timm(model, weights, embed, meta=True)
        if head != "auto":
            _name_head(encoder, head)
        else:
            _random_head_off(encoder)
    label_set, note = encoder.label_set, encoder.head_note
    if label_set is not None and embed != "pre_logits":
        label_set, note = None, f"the head reads the pre_logits embedding, not {embed}; head labels (pred_*) are left empty"
    return {"label_set": label_set, "note": note}


def _name_head(encoder: Encoder, head: str) -> None:
    """Apply the user's choice of head label set to a freshly built encoder (UserError on a mismatch)."""
    if head == "none":
        encoder.head, encoder.label_set, encoder.label_names = None, None, None
        encoder.head_note = "head labels switched off (head: none)"
        return
    module = encoder.module
    classifier = encoder.head
    if classifier is None and hasattr(module, "get_classifier") and int(getattr(module, "num_classes", 0) or 0) > 0:
        classifier = module.get_classifier()  # e.g. a projection that the user says is a classifier
    if classifier is None:
        raise UserError(f"head {head!r}: {encoder.name} has no classifier to name")
    n_classes = int(getattr(classifier, "out_features", 0) or getattr(module, "num_classes", 0) or 0)
    if head.startswith("file:"):
        path = Path(head[5:])
        if not path.is_file():
            raise UserError(f"head {head!r}: no such class-name file")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        label_set = f"file:{path.name}"
    else:
        names = label_set_names(head)
        label_set = head
    if n_classes and len(names) != n_classes:
        raise UserError(f"head {head!r} names {len(names)} classes; the head of {encoder.name} has {n_classes}")
    encoder.head, encoder.label_set, encoder.label_names, encoder.head_note = classifier, label_set, names, ""


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


__all__ = [
    "RANDOM_HEAD_NOTE",
    "WEIGHT_HELP",
    "Encoder",
    "check_timm_model",
    "default_device",
    "describe_head",
    "is_control",
    "load_encoder",
    "suggest_models",
    "timm_label_set",
]
