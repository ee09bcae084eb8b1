"""Zero-shot labels for CLIP-family image towers, with open_clip as the text side.

A zero-shot classifier is what CLIP users run downstream: every class name is written into every
prompt template ("a photo of a {}."), the prompts go through the text tower, each text embedding
is L2-normalised, the normalised embeddings of a class are averaged over its templates and the
mean is normalised again; the C class vectors form a (D, C) matrix. An image is labelled by

    logits = logit_scale * normalize(image_embedding) @ classifier        # (B, C)
    label, prob = argmax(logits), max(softmax(logits))

exactly as open_clip scores images (`CLIP.get_logits`). Class names and prompt templates are
open_clip's own (`IMAGENET_CLASSNAMES`, `OPENAI_IMAGENET_TEMPLATES`), never copied here; a spec
can name another class list (`classes: file:<path>`, one name per line). The classifier is built
by `open_clip.build_zero_shot_classifier` with open_clip's tokenizer:

    text, tokenizer = load_text_tower("ViT-B-16-quickgelu", "openai")      # or "random:<seed>"
    classifier = build_classifier(text, tokenizer, class_names("imagenet"), prompt_templates())
    labels, probs = zero_shot_labels(image_embedding, classifier, text.logit_scale)

Which image embedding. CLIP pairs its text tower with the image embedding *after* the image
projection: open_clip's `encode_image` is `ln_post(x[:, 0]) @ proj`. timm's CLIP image towers
(`vit_base_patch16_clip_224.openai`, ...) hold that projection as their "head" (a bias-free
Linear, width -> embed_dim, e.g. 768 -> 512), so the timm model's forward output is the CLIP image
embedding and its `pre_logits` output (vitsweep's default embedding point) is NOT: zero-shot
labels must apply the projection to `pre_logits` first (`project_to_clip`). `forward_is_projected`
says, for a timm model name, whether its forward output is that projected embedding (a CLIP
tower with its projection head; not a `_gap` tower without one, not a tower fine-tuned into an
ImageNet classifier). Only such towers get zero-shot labels; the other embedding points
(`cls:<block>`, `mean_patch:<block>`) live in no space the text tower knows.

Which text tower. `text_tower_for(timm_name)` maps a timm CLIP image tower to the open_clip
config (and pretrained tag) whose text tower was trained with it, e.g.
`vit_base_patch16_clip_224.openai` -> (`ViT-B-16-quickgelu`, `openai`); an unknown tower is a
one-line UserError naming the known ones. Tests use `TINY_TEXT` ("tiny"), a one-layer, 32-wide
random-init open_clip `TextTransformer` whose output width is the image embedding's D (open_clip's
smallest shipped text tower, `ViT-S-16-alt`'s, is 10 layers x 256 wide).

Weights: `random:<seed>` (seeded random init, no download; what tests use) or an open_clip
pretrained tag (`openai`, `laion2b_s34b_b88k`, ...) loaded through open_clip from the Hugging
Face hub or its local cache; where they cannot load (offline, unknown tag) the error is one
line that names the config and the weights. A random-init tower's logit scale is open_clip's
initial 1/0.07; a pretrained tower's is its learned `logit_scale.exp()` (100 for OpenAI's).

Pure torch + open_clip: no ray, duckdb, pyarrow or timm import; no file I/O but the class-list file.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sweep.encoders.hub import hub_offline as _hub_offline
from sweep.encoders.hub import hub_reachable as _hub_reachable
from sweep.errors import UserError

# A pretrained download that cannot reach its host must fail quickly, never hang.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")

TINY_TEXT = "tiny"
# The tiny test tower: open_clip's tokenizer (context 77, vocab 49408), one 32-wide block.
TINY_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
DEFAULT_CLASSES = "imagenet"
DEFAULT_TEMPLATES = "openai"
RANDOM_LOGIT_SCALE = 1 / 0.07  # open_clip's init_logit_scale = log(1 / 0.07)

# timm CLIP image tower (name.tag) -> (open_clip config, pretrained tag) of the text tower it was
# trained with. OpenAI's weights use QuickGELU: open_clip's `-quickgelu` configs.
TIMM_TO_OPEN_CLIP: dict[str, tuple[str, str]] = {
    "vit_base_patch32_clip_224.openai": ("ViT-B-32-quickgelu", "openai"),
    "vit_base_patch16_clip_224.openai": ("ViT-B-16-quickgelu", "openai"),
    "vit_large_patch14_clip_224.openai": ("ViT-L-14-quickgelu", "openai"),
    "vit_large_patch14_clip_336.openai": ("ViT-L-14-336-quickgelu", "openai"),
    "vit_base_patch32_clip_224.laion2b": ("ViT-B-32", "laion2b_s34b_b79k"),
    "vit_base_patch16_clip_224.laion2b": ("ViT-B-16", "laion2b_s34b_b88k"),
    "vit_large_patch14_clip_224.laion2b": ("ViT-L-14", "laion2b_s32b_b82k"),
    "vit_huge_patch14_clip_224.laion2b": ("ViT-H-14", "laion2b_s32b_b79k"),
    "vit_base_patch16_clip_224.datacompxl": ("ViT-B-16", "datacomp_xl_s13b_b90k"),
    "vit_large_patch14_clip_224.datacompxl": ("ViT-L-14", "datacomp_xl_s13b_b90k"),
}
# timm's `*_clip_quickgelu_*` archs are the same towers under explicit QuickGELU names.
_QUICKGELU_ALIAS = re.compile(r"_clip_quickgelu_")

_CLIP_ARCH = re.compile(r"(^|_)clip(_|$)")
_FINE_TUNED_TAG = re.compile(r"(^|_)ft(_|$)")  # e.g. openai_ft_in12k_in1k: an ImageNet classifier
_NO_PROJECTION_ARCH = re.compile(r"_clip_gap(_|$)")  # timm's resnet*_clip_gap: pooled, no projection


# ---- which image embedding, which text tower --------------------------------------------------------


def forward_is_projected(timm_name: str, default_tag: str | None = None) -> bool:
    """Whether the forward output of timm model `name[.tag]` is the CLIP image embedding (its
    image-text projection applied): a CLIP-family tower whose head is that projection. False for
    any other model, a `_clip_gap` tower (no projection) and a CLIP tower fine-tuned into a
    classifier (tag with `ft`, e.g. `openai_ft_in12k_in1k`). The `pre_logits` embedding point of
    a projected tower is the input of the projection, never the CLIP embedding itself.

    A tag-less name is built by timm with its default tag, which for several CLIP archs is a
    fine-tuned classifier (`vit_base_patch16_clip_224` -> `laion2b_ft_in12k_in1k`, a random
    1000-way head even at random init) and for others a CLIP tag: pass that default tag (the
    built model's `pretrained_cfg["tag"]`) as `default_tag`; without one the answer is False.
    So a random-init CLIP tower for zero-shot tests is named with its tag:
    `vit_base_patch16_clip_224.openai` with weights `random:<seed>` (a 768 -> 512 projection)."""
    arch, _, tag = timm_name.partition(".")
    tag = tag or (default_tag or "")
    if not tag or not _CLIP_ARCH.search(arch) or _NO_PROJECTION_ARCH.search(arch):
        return False
    return not _FINE_TUNED_TAG.search(tag)


def text_tower_for(timm_name: str) -> tuple[str, str]:
    """(open_clip config, pretrained tag) of the text tower trained with timm CLIP image tower
    `timm_name` (a `name.tag` in `TIMM_TO_OPEN_CLIP`; `*_clip_quickgelu_*` names map like their
    plain twins). One-line UserError for any other name."""
    key = _QUICKGELU_ALIAS.sub("_clip_", timm_name)
    if key in TIMM_TO_OPEN_CLIP:
        return TIMM_TO_OPEN_CLIP[key]
    known = ", ".join(sorted(TIMM_TO_OPEN_CLIP))
    if "." not in timm_name and _CLIP_ARCH.search(timm_name):
        why = "names no pretrained tag (the text tower and the head's shape depend on it)"
    elif not forward_is_projected(timm_name):
        why = "is not a CLIP image tower with its image-text projection"
    else:
        why = "has no known open_clip text tower"
    raise UserError(f"zero-shot labels: timm model {timm_name!r} {why}; known: {known}")


def resolve_text(timm_name: str, text: str) -> tuple[str, str]:
    """A spec's `text:` for image tower `timm_name` -> (open_clip config, weights) for
    `load_text_tower`: `pretrained` (the tag the image tower was trained with), an open_clip
    pretrained tag (`openai`, ...), `random:<seed>` (the paired config, random init) or
    `tiny:<seed>` (`TINY_TEXT`, random init; `load_text_tower` gets the image's D as embed_dim).
    The image tower must be a projected CLIP tower (`forward_is_projected`) in every case."""
    if not forward_is_projected(timm_name):
        text_tower_for(timm_name)  # raises the one-line reason
    if text.startswith(f"{TINY_TEXT}:"):
        return TINY_TEXT, "random:" + text.split(":", 1)[1]
    config, tag = text_tower_for(timm_name)
    if text.startswith("random:"):
        return config, text
    return config, tag if text == "pretrained" else text


# ---- the text tower ----------------------------------------------------------------------------------


class TextTower(nn.Module):
    """An open_clip text tower: tokens (N, L) -> (N, D) text embeddings, in the joint space.

    `logit_scale` is the temperature open_clip multiplies cosine similarities by (already
    exponentiated: 100.0 for OpenAI's weights, 1/0.07 at random init)."""

    def __init__(self, text: nn.Module, logit_scale: float, config: str, weights: str, embed_dim: int) -> None:
        super().__init__()
        self.text = text
        self.logit_scale = float(logit_scale)
        self.config = config
        self.weights = weights
        self.embed_dim = int(embed_dim)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's signature, so `open_clip.build_zero_shot_classifier` can drive it."""
        x = self.text(tokens)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode_text(tokens)

    def provenance(self) -> dict[str, Any]:
        return {"text_config": self.config, "text_weights": self.weights,
                "embed_dim": self.embed_dim, "logit_scale": self.logit_scale}


class _ClipText(nn.Module):
    """The text half of a loaded open_clip CLIP whose text modules sit on the model itself
    (open_clip's `CLIP`, not `CustomTextCLIP`): its image tower is dropped."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model.visual = nn.Identity()  # encode_text never touches it; free its memory
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def _open_clip() -> Any:
    import open_clip  # the dependency of this module alone

    return open_clip


def load_text_tower(model_name: str, weights: str = "random:0", embed_dim: int | None = None,
                    device: str | torch.device = "cpu") -> tuple[TextTower, Callable[..., torch.Tensor]]:
    """(text tower, tokenizer) for open_clip config `model_name` (`ViT-B-16-quickgelu`, ...) or
    `TINY_TEXT`. weights: `random:<seed>` (seeded random init) or an open_clip pretrained tag.
    embed_dim: the image embedding's D; required for the tiny tower, checked for the others.
    The tower is in eval mode with no gradients."""
    open_clip = _open_clip()
    if model_name == TINY_TEXT:
        if embed_dim is None:
            raise UserError("zero-shot labels: the tiny text tower needs the image embedding's width (embed_dim)")
        config = {"embed_dim": int(embed_dim), "text_cfg": dict(TINY_TEXT_CFG), "quick_gelu": False}
    else:
        config = open_clip.get_model_config(model_name)
        if not config or "text_cfg" not in config:
            raise UserError(f"zero-shot labels: unknown open_clip config {model_name!r} "
                            f"(e.g. ViT-B-16, ViT-B-16-quickgelu, ViT-L-14, or {TINY_TEXT!r})")
    width = int(config["embed_dim"])
    if embed_dim is not None and width != int(embed_dim):
        raise UserError(f"zero-shot labels: text tower {model_name!r} embeds into {width} dimensions; "
                        f"the image embedding has {embed_dim}")
    if weights.startswith("random:"):
        seed = weights.split(":", 1)[1]
        if not seed.isdigit():
            raise UserError(f"zero-shot labels: bad text weights {weights!r}: the seed must be a whole number")
        from open_clip.model import (
            _build_text_tower,  # cfg -> TextTransformer, as open_clip's CLIP builds it
        )

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            text = _build_text_tower(width, config["text_cfg"], quick_gelu=bool(config.get("quick_gelu", False)))
        tower = TextTower(text, RANDOM_LOGIT_SCALE, model_name, weights, width)
    else:
        if model_name == TINY_TEXT:
            raise UserError(f"zero-shot labels: the tiny text tower has no pretrained weights ({weights!r}); "
                            "use random:<seed>")
        tower = _load_pretrained(open_clip, model_name, weights, width)
    tokenizer = open_clip.get_tokenizer("ViT-B-32" if model_name == TINY_TEXT else model_name)
    tower.eval().requires_grad_(False)
    return tower.to(device), tokenizer


def check_pretrained_tag(model_name: str, tag: str) -> None:
    """One-line UserError unless open_clip knows pretrained weights `tag` for config `model_name`
    (no download: the spec check before any unit; whether they load is known only when they do)."""
    tags = list(_open_clip().list_pretrained_tags_by_model(model_name))
    if tag not in tags:
        raise UserError(f"zero-shot labels: open_clip has no pretrained text weights {tag!r} for {model_name!r} "
                        f"(known: {', '.join(tags) or 'none'}; or random:<seed>, tiny:<seed>)")


def _load_pretrained(open_clip: Any, model_name: str, tag: str, width: int) -> TextTower:
    reachable = _hub_reachable()
    try:
        with _hub_offline(not reachable), _quiet():  # cached weights still load
            model = open_clip.create_model(model_name, pretrained=tag, require_pretrained=True)
    except Exception as err:  # network, unknown tag, hub errors: all mean "no text weights here"
        if not reachable:
            reason = "not in the local cache, and the hub cannot be reached from this machine"
        else:
            reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"zero-shot labels: pretrained text weights {tag!r} for open_clip {model_name!r} "
                        f"could not be loaded ({reason}); use text: random:<seed> or tiny:<seed>") from None
    scale = float(model.logit_scale.exp().item())
    text = model.text if isinstance(getattr(model, "text", None), nn.Module) else _ClipText(model)
    if hasattr(model, "visual") and isinstance(getattr(model, "text", None), nn.Module):
        model.visual = nn.Identity()
    return TextTower(text, scale, model_name, tag, width)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Neither warnings nor open_clip's own `logging.error` lines (the failure becomes ONE line)."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# ---- class names and prompts -----------------------------------------------------------------------


def class_names(spec: str = DEFAULT_CLASSES) -> list[str]:
    """A spec's `classes:` -> class names: `imagenet` (open_clip's IMAGENET_CLASSNAMES, 1000) or
    `file:<path>` (one name per line; blank lines skipped)."""
    if spec == "imagenet":
        return list(_open_clip().IMAGENET_CLASSNAMES)
    if spec.startswith("file:"):
        path = Path(spec[5:])
        if not path.is_file():
            raise UserError(f"zero-shot classes {spec!r}: no such class-name file")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise UserError(f"zero-shot classes {spec!r}: the file names no class")
        return names
    raise UserError(f"unknown zero-shot classes {spec!r} (use imagenet or file:<path>)")


def prompt_templates(spec: str = DEFAULT_TEMPLATES) -> list[Callable[[str], str]]:
    """open_clip's prompt templates: `openai` (OPENAI_IMAGENET_TEMPLATES, 80) or `simple`
    (SIMPLE_IMAGENET_TEMPLATES)."""
    open_clip = _open_clip()
    if spec == "openai":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    if spec == "simple":
        return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    raise UserError(f"unknown zero-shot templates {spec!r} (use openai or simple)")


# ---- the classifier and the labels -----------------------------------------------------------------


@torch.no_grad()
def build_classifier(text_model: TextTower, tokenizer: Callable[..., torch.Tensor], classnames: Sequence[str],
                     templates: Sequence[Callable[[str], str] | str], classes_per_batch: int = 10) -> torch.Tensor:
    """(D, C) float32 zero-shot classifier: per class, the templates' normalised text embeddings,
    averaged and normalised (open_clip's `build_zero_shot_classifier`), on the tower's device."""
    if not classnames:
        raise UserError("zero-shot labels: no class names")
    if not templates:
        raise UserError("zero-shot labels: no prompt templates")
    device = next(text_model.parameters()).device
    prompts = [t.format if isinstance(t, str) else t for t in templates]  # open_clip wants one kind
    weights = _open_clip().build_zero_shot_classifier(
        text_model, tokenizer, list(classnames), prompts,
        num_classes_per_batch=classes_per_batch, device=device, use_tqdm=False,
    )
    return weights.float()


def project_to_clip(module: nn.Module, pre_logits: torch.Tensor) -> torch.Tensor:
    """(B, W) `pre_logits` embeddings of a timm CLIP tower -> (B, D) CLIP image embeddings: its
    head (the image-text projection) applied, as its forward would. The caller checks
    `forward_is_projected(name)` first."""
    head = module.get_classifier() if hasattr(module, "get_classifier") else getattr(module, "head", None)
    if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
        raise UserError(f"zero-shot labels: {type(module).__name__} has no image-text projection head")
    return head(pre_logits)


@torch.no_grad()
def zero_shot_logits(image_emb: torch.Tensor, classifier: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """(B, D), (D, C) -> (B, C) = logit_scale * normalize(image_emb) @ classifier, in float32."""
    if image_emb.shape[-1] != classifier.shape[0]:
        raise UserError(f"zero-shot labels: image embeddings have {image_emb.shape[-1]} dimensions, "
                        f"the classifier {classifier.shape[0]}")
    image = F.normalize(image_emb.float(), dim=-1)
    return logit_scale * (image @ classifier.to(image.device, torch.float32))


@torch.no_grad()
def zero_shot_labels(image_emb: torch.Tensor, classifier: torch.Tensor,
                     logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(label (B,) int64, prob (B,) float32): the top-1 class of the zero-shot logits and its
    softmax probability. An empty batch gives empty tensors."""
    probs = zero_shot_logits(image_emb, classifier, logit_scale).softmax(dim=-1)
    if probs.shape[0] == 0:
        return probs.new_zeros(0, dtype=torch.long), probs.new_zeros(0)
    prob, label = probs.max(dim=-1)
    return label, prob


def label_names(labels: torch.Tensor | Sequence[int | None], names: Sequence[str]) -> list[str | None]:
    """Class indices -> names (None where unknown or out of range): the `zs_*_name` columns."""
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    return [names[c] if c is not None and 0 <= c < len(names) else None for c in values]


def classifier_digest(classifier: torch.Tensor) -> str:
    """A short content hash of a classifier (its float32 bytes), for the run's cache record."""
    import hashlib

    data = classifier.detach().float().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


__all__ = [
    "TINY_TEXT", "TIMM_TO_OPEN_CLIP", "TextTower", "build_classifier", "class_names", "classifier_digest",
    "forward_is_projected", "label_names", "load_text_tower", "project_to_clip", "prompt_templates",
    "resolve_text", "text_tower_for", "zero_shot_labels", "zero_shot_logits",
]
