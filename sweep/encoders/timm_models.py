"""timm models as encoders: the only module that imports timm.

A timm model is named `name[.tag]`; its own normalisation and input size are applied, and its
embedding is read at `pre_logits` (default), `cls:<block>` or `mean_patch:<block>`. Its head is
a classifier only over a label set timm knows (ImageNet-1k / -12k / -21k / -22k, from the
pretrained config's `label_names`, else the class count as `timm.data.infer_imagenet_subset`
maps it); a CLIP / SigLIP image tower that was not fine-tuned on a label set has a "head" that is
the image-text projection, which is not a classifier. `check_timm_model` validates a name and an
embedding point before any model is built (the sweep driver validates a spec with it).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from sweep.data.images import Preprocess
from sweep.encoders.encoder import Encoder
from sweep.encoders.weights import WEIGHT_HELP, with_weights
from sweep.errors import UserError

# A pretrained download that cannot reach its host must fail quickly, never hang.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")


def _import_timm() -> Any:
    with warnings.catch_warnings():  # timm's import-time torch.jit deprecation noise
        warnings.filterwarnings("ignore", category=FutureWarning)
        import timm  # the only timm import in the project

    return timm


def load_timm(name: str, weights: str, embed: str, meta: bool = False) -> Encoder:
    """The encoder of timm model `name[.tag]` with `weights` read at `embed`.
    meta: build on the meta device (structure and metadata only, no weights)."""
    timm = _import_timm()
    base = name.split(".", 1)[0]
    if not timm.is_model(base):
        raise UserError(f"unknown timm model {name!r} ({suggest_models(base, timm.list_models())})")
    if meta:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    else:
        model = _create_timm(timm, name, weights)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    _, height, width = data_cfg["input_size"]
    label_set, label_names, head_note = timm_label_set(timm, name, model)
    has_classifier = label_set is not None and hasattr(model, "get_classifier")
    return Encoder(
        name=name,
        weights=weights,
        embed_point=embed,
        module=model,
        mean=torch.tensor(data_cfg["mean"], dtype=torch.float32),
        std=torch.tensor(data_cfg["std"], dtype=torch.float32),
        preprocess=Preprocess(
            size=(height, width),
            crop_pct=float(data_cfg.get("crop_pct", 1.0)),
            interpolation=str(data_cfg.get("interpolation", "bicubic")),
        ),
        head=model.get_classifier() if has_classifier else None,
        embed_fn=_timm_embed_fn(model, embed),
        label_set=label_set if has_classifier else None,
        label_names=label_names if has_classifier else None,
        head_note=head_note,
    )


def label_set_names(label_set: str) -> list[str]:
    """The class names of a label set timm knows (`imagenet-1k`, `imagenet-21k`, ...), offline;
    UserError for any other name."""
    timm = _import_timm()
    try:
        info = timm.data.ImageNetInfo(label_set)
    except (ValueError, AssertionError, KeyError):
        raise UserError(f"unknown head label set {label_set!r} (use auto, none, imagenet-1k, imagenet-21k, "
                        "imagenet-12k, imagenet-22k or file:<path>)") from None
    return [info.index_to_description(i) for i in range(info.num_classes())]


# Contrastive image towers: their timm "head" is the projection into the joint image-text space.
_PROJECTION_ARCH = re.compile(r"(^|_)(clip|siglip\d*)(_|$)")
_FINE_TUNED_TAG = re.compile(r"(^|_)ft(_|$)")  # e.g. laion2b_ft_in12k_in1k: a classifier again


def timm_label_set(timm: Any, name: str, model: nn.Module) -> tuple[str | None, list[str] | None, str]:
    """(label set, class names, note) of a timm model's head: a label set only for a classifier
    over a known one; otherwise None and a one-line reason."""
    n_classes = int(getattr(model, "num_classes", 0) or 0)
    arch, _, tag = name.partition(".")
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    tag = tag or str(cfg.get("tag") or "")
    if n_classes <= 0:
        return None, None, f"{name} has no classifier head"
    if _PROJECTION_ARCH.search(arch) and not _FINE_TUNED_TAG.search(tag):
        return None, None, (
            f"{name}: its {n_classes}-way head is the image-text projection of a contrastive (CLIP-style) "
            "model, not a classifier; head labels (pred_*) are left empty, use the k-NN labels"
        )
    names = cfg.get("label_names")
    if isinstance(names, (list, tuple)) and len(names) == n_classes:
        descriptions = cfg.get("label_descriptions")
        if isinstance(descriptions, dict):
            names = [str(descriptions.get(n, n)) for n in names]
        return str(cfg.get("label_set") or "pretrained_cfg"), [str(n) for n in names], ""
    subset = timm.data.infer_imagenet_subset(model)
    if subset is None:
        return None, None, (
            f"{name}: its {n_classes}-way head is over no label set timm knows (ImageNet-1k/-12k/-21k/-22k); "
            "head labels (pred_*) are left empty"
        )
    info = timm.data.ImageNetInfo(subset)
    return subset, [info.index_to_description(i) for i in range(info.num_classes())], ""


def _create_timm(timm: Any, name: str, weights: str) -> nn.Module:
    def build(pretrained: bool) -> nn.Module:
        if not pretrained:
            return timm.create_model(name, pretrained=False)
        reachable = _hub_reachable()
        try:
            with _hub_offline(not reachable):  # cached weights still load; nothing is retried in vain
                return timm.create_model(name, pretrained=True)
        except Exception as err:  # network, missing tag, hub errors: all mean "no weights here"
            if not reachable:
                reason = "not in the local cache, and the hub cannot be reached from this machine"
            else:
                reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise UserError(f"pretrained weights for {name!r} could not be loaded ({reason}); {WEIGHT_HELP}") from None

    return with_weights(build, weights)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Put huggingface_hub in offline mode (cache only) for the duration, when asked."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub (where timm's pretrained weights live) answers a TCP connect."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _timm_embed_fn(model: nn.Module, embed: str) -> Any:
    if embed == "pre_logits":
        return lambda m, x: m.forward_head(m.forward_features(x), pre_logits=True)
    kind, block_text = embed.split(":")
    block = int(block_text)
    depth = len(getattr(model, "blocks", []))
    if not hasattr(model, "forward_intermediates") or depth == 0:
        raise UserError(f"embedding point {embed!r} needs a ViT with blocks; {type(model).__name__} has none")
    if not -depth <= block < depth:
        raise UserError(f"embedding point {embed!r}: block must be in [0, {depth - 1}]")
    block %= depth

    def embed_fn(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        (spatial, prefix), = m.forward_intermediates(
            x, indices=[block], return_prefix_tokens=True, norm=False,
            stop_early=True, output_fmt="NLC", intermediates_only=True,
        )  # spatial: (B, N_patches, C); prefix: (B, N_prefix, C)
        if kind == "cls":
            if prefix is None or prefix.shape[1] == 0:
                raise UserError(f"embedding point {embed!r}: this model has no class token")
            return prefix[:, 0]
        return spatial.mean(dim=1)

    return embed_fn


# ---- checks before any model is built (the sweep driver validates a spec with these) ---------------


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), one row at a time."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def suggest_models(name: str, known: list[str], n: int = 4) -> str:
    """Hint text for an unknown model: the closest names by edit distance, and the names of its
    family (the names sharing its first two `_`-separated words, else its first)."""
    closest = sorted(known, key=lambda k: (_edit_distance(name, k), k))[:n]
    parts = name.split("_")
    family: list[str] = []
    for cut in (2, 1):  # e.g. vit_small_*, else vit_*
        prefix = "_".join(parts[:cut]) + "_"
        family = [k for k in known if k.startswith(prefix) and k not in closest]
        if family and len(parts) > cut:
            break
    family = sorted(family, key=lambda k: (_edit_distance(name, k), k))[:n]
    hint = f"closest: {', '.join(closest)}"
    if family:
        hint += f"; same family: {', '.join(family)}"
    return hint


def check_timm_model(name: str, embed: str = "pre_logits") -> None:
    """UserError unless `name[.tag]` is in timm's registry and `embed`'s block index exists in
    that architecture (its depth is read from a model built on the meta device: no memory, no
    weights)."""
    timm = _import_timm()
    base = name.split(".", 1)[0]
    if not timm.is_model(base):
        raise UserError(f"unknown timm model {name!r} ({suggest_models(base, timm.list_models())})")
    if embed == "pre_logits":
        return
    block = int(embed.split(":")[1])
    with torch.device("meta"):
        model = timm.create_model(base, pretrained=False)
    depth = len(getattr(model, "blocks", []) or [])
    if not hasattr(model, "forward_intermediates") or depth == 0:
        raise UserError(f"embedding point {embed!r} needs a ViT with blocks; {base} has none")
    if not -depth <= block < depth:
        raise UserError(f"embedding point {embed!r}: {base} has {depth} blocks, so the block must be in [0, {depth - 1}]")
