"""Encoders: the only module that imports timm.

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
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import socket
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from sweep.errors import UserError
from sweep.data.images import Preprocess

# A pretrained download that cannot reach its host must fail quickly, never hang.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")

_EMBED_RE = re.compile(r"^(pre_logits|(cls|mean_patch):(-?\d+))$")
WEIGHT_HELP = "use --weights random:<seed> for a seeded random initialisation or file:<path> for a local checkpoint"


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
    if ":" in model:
        encoder = _load_factory(model, weights, embed)
    else:
        encoder = _load_timm(model, weights, embed)
    if head != "auto":
        _name_head(encoder, head)
    encoder.module.eval().requires_grad_(False)
    if encoder.head is not None:
        encoder.head.eval().requires_grad_(False)
    return encoder.to(device)


def describe_head(model: str, weights: str = "random:0", embed: str = "pre_logits", head: str = "auto") -> dict[str, Any]:
    """{"label_set", "note"} of an encoder's head labels without loading weights: a timm model is
    built on the meta device (no memory, no download), a factory is built as `load_encoder` would."""
    if ":" in model:
        encoder = load_encoder(model, weights, embed, device="cpu", head=head)
    else:
        encoder = _load_timm(model, weights, embed, meta=True)
        if head != "auto":
            _name_head(encoder, head)
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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            import timm
        try:
            info = timm.data.ImageNetInfo(head)
        except (ValueError, AssertionError, KeyError):
            raise UserError(f"unknown head label set {head!r} (use auto, none, imagenet-1k, imagenet-21k, "
                            "imagenet-12k, imagenet-22k or file:<path>)") from None
        names = [info.index_to_description(i) for i in range(info.num_classes())]
        label_set = head
    if n_classes and len(names) != n_classes:
        raise UserError(f"head {head!r} names {len(names)} classes; the head of {encoder.name} has {n_classes}")
    encoder.head, encoder.label_set, encoder.label_names, encoder.head_note = classifier, label_set, names, ""


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _load_factory(spec: str, weights: str, embed: str) -> Encoder:
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
    module = factory() if weights == "factory" else _with_weights(lambda pretrained: factory(), weights)
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


def _load_timm(name: str, weights: str, embed: str, meta: bool = False) -> Encoder:
    """meta: build on the meta device (structure and metadata only, no weights)."""
    with warnings.catch_warnings():  # timm's import-time torch.jit deprecation noise
        warnings.filterwarnings("ignore", category=FutureWarning)
        import timm  # the only timm import in the project

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

    return _with_weights(build, weights)


def _with_weights(build: Callable[[bool], nn.Module], weights: str) -> nn.Module:
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
        state = _read_checkpoint(path)
        module = build(False)
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            first = " ".join(str(err).split())[:200]
            raise UserError(f"weights file {str(path)!r} does not fit the model: {first}") from None
        return module
    raise UserError(f"unknown weight source {weights!r}: use pretrained, random:<seed> or file:<path>")


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


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
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


def _import_timm() -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        import timm

    return timm


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
