"""Zero-shot labels in a run: the classifier of a model setting, built once and cached in the run.

A model entry with `text:` gets zero-shot CLIP labels (`zs_*` columns of `match` and `perturb`).
Its classifier (D x C: class names x prompt templates through the text tower, see
`sweep.encoders.zeroshot`) depends only on the text tower, its weights, the class names, the
templates, the image embedding's width D and open_clip's version. Those inputs hash to a
classifier id; the first worker that needs it builds it and writes it to the run at
`zeroshot/<id>.parquet` (one row per class: index, name, float32 vector; the build record in the
file's metadata); every later unit, on any worker, reads that file instead of building. The build
is deterministic (seeded random text towers, or fixed pretrained ones), so two workers racing to
write the same id write the same bytes, and the write is atomic.

The image embedding CLIP pairs with its text tower is the one after the image-text projection:
for a timm CLIP tower (`name.openai`, ...) its head applied to `pre_logits`
(`project_to_clip`); for a `package.module:callable` factory (tests) the module's
`clip_projection` attribute when it has one, else the factory's output itself.

    zs = zero_shot_for(store, encoder, text="tiny:0", classes="file:c.txt")  # None without text
    labels, probs = zs.labels(pre_logits)          # lists of int / float, one per row
    zs.names(labels)                               # the zs_*_name columns
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sweep.run.store import RunStore

CACHE_DIR = "zeroshot"


@dataclass
class ZeroShot:
    """A model setting's zero-shot classifier and how to reach its image embedding."""

    classifier: torch.Tensor  # (D, C) float32, unit columns
    logit_scale: float
    class_names: list[str]
    project: Any  # callable (B, W) pre_logits -> (B, D) CLIP image embedding
    classifier_id: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def labels(self, pre_logits: torch.Tensor) -> tuple[list[int], list[float]]:
        """(top-1 class, its softmax probability) per row of (B, W) pre_logits embeddings."""
        from sweep.encoders.zeroshot import zero_shot_labels

        if len(pre_logits) == 0:
            return [], []
        z = self.project(pre_logits.to(self.classifier.device).float())
        label, prob = zero_shot_labels(z, self.classifier, self.logit_scale)
        return label.cpu().tolist(), prob.double().cpu().tolist()

    def names(self, labels: list[int | None]) -> list[str | None]:
        from sweep.encoders.zeroshot import label_names

        return label_names(labels, self.class_names)


def projection_of(encoder: Any) -> Any:
    """The callable taking the encoder's pre_logits to the CLIP image embedding (see the docstring)."""
    from sweep.encoders.zeroshot import project_to_clip

    if ":" in encoder.name:  # a factory
        proj = getattr(encoder.module, "clip_projection", None)
        return proj if proj is not None else (lambda e: e)
    module = encoder.module
    return lambda e: project_to_clip(module, e)


def check_text(model: str, embed: str, text: str, classes: str, templates: str) -> None:
    """What can be checked of a model's `text:`/`classes:` before any unit: the image tower is a
    projected CLIP tower with a text tower (timm names), the embedding point is pre_logits, the
    class names and templates exist. UserError (one line) otherwise."""
    from sweep.encoders import zeroshot
    from sweep.errors import UserError

    if embed != "pre_logits":
        raise UserError(f"zero-shot labels read the projected pre_logits embedding, not {embed}")
    if ":" in model:  # a factory: only the tiny random text tower (tests, demos)
        if not text.startswith(f"{zeroshot.TINY_TEXT}:") or not text.split(":", 1)[1].isdigit():
            raise UserError(f"{text!r}: a factory encoder takes only {zeroshot.TINY_TEXT}:<seed>")
    else:
        config, weights = zeroshot.resolve_text(model, text)
        if weights.startswith("random:") and not weights[7:].isdigit():
            raise UserError(f"{text!r}: random:<seed> needs a whole-number seed")
        if not weights.startswith("random:"):
            zeroshot.check_pretrained_tag(config, weights)
    zeroshot.class_names(classes)
    zeroshot.prompt_templates(templates)


def zero_shot_for(store: RunStore | None, encoder: Any, text: str | None, classes: str = "imagenet",
                  templates: str = "openai") -> ZeroShot | None:
    """The setting's ZeroShot, read from the run's cache or built (and cached); None without text."""
    if not text:
        return None
    from sweep.encoders import zeroshot

    project = projection_of(encoder)
    with torch.no_grad():
        probe = torch.zeros(1, *encoder.input_size, device=encoder.device)
        embed_dim = int(project(encoder.embed(probe)).shape[-1])
    config, weights = ((zeroshot.TINY_TEXT, "random:" + text.split(":", 1)[1]) if ":" in encoder.name
                       else zeroshot.resolve_text(encoder.name, text))
    names = zeroshot.class_names(classes)
    inputs = {"text_config": config, "text_weights": weights, "embed_dim": embed_dim, "classes": classes,
              "class_names_sha": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
              "templates": templates, "open_clip": _open_clip_version()}
    cid = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    relative = f"{CACHE_DIR}/{cid}.parquet"
    cached = _read(store, relative) if store is not None else None
    if cached is None:
        t0 = time.perf_counter()
        tower, tokenizer = zeroshot.load_text_tower(config, weights, embed_dim=embed_dim)
        tower = tower.to(encoder.device)
        W = zeroshot.build_classifier(tower, tokenizer, names, zeroshot.prompt_templates(templates)).cpu()
        record = {**inputs, "logit_scale": tower.logit_scale, "n_classes": len(names),
                  "digest": zeroshot.classifier_digest(W), "build_seconds": time.perf_counter() - t0,
                  "device": str(encoder.device)}
        if store is not None:
            store.write_parquet(relative, _table(W, names, record))
    else:
        W, names, record = cached
    return ZeroShot(W.to(encoder.device), float(record["logit_scale"]), names, project, cid, record)


def _open_clip_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return "unknown"


def _table(W: torch.Tensor, names: list[str], record: dict[str, Any]) -> pa.Table:
    matrix = W.T.contiguous().numpy().astype(np.float32)  # (C, D)
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    table = pa.table({"class": pa.array(np.arange(len(names)), pa.int64()), "name": pa.array(names, pa.string()),
                      "vector": pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), pa.float32()))})
    return table.replace_schema_metadata({"vitsweep.zeroshot": json.dumps(record, sort_keys=True)})


def _read(store: RunStore, relative: str) -> tuple[torch.Tensor, list[str], dict[str, Any]] | None:
    if not store.exists(relative):
        return None
    with store.fs.open_input_file(store.path(relative)) as handle:
        table = pq.read_table(handle)
    record = json.loads(table.schema.metadata[b"vitsweep.zeroshot"])
    vectors = table.column("vector").combine_chunks()
    matrix = vectors.values.to_numpy().reshape(len(table), -1)
    return torch.from_numpy(matrix.copy()).T.contiguous(), table.column("name").to_pylist(), record


def records(store: RunStore) -> list[dict[str, Any]]:
    """The build records of every classifier cached in the run (for summaries)."""
    out = []
    for path in store.parquet_files(CACHE_DIR):
        with store.fs.open_input_file(path) as handle:
            meta = pq.read_schema(handle).metadata or {}
        if b"vitsweep.zeroshot" in meta:
            out.append(json.loads(meta[b"vitsweep.zeroshot"]))
    return out


def zero_shot_of_unit(store: RunStore, spec: dict[str, Any], unit: dict[str, Any], probe: Any,
                      encoder: Any) -> ZeroShot | None:
    """The ZeroShot a finished unit ran with (for replay): the spec's model entry whose setting
    gives the unit's config hash; its classifier read from the run's cache (None without text)."""
    from sweep.run.spec import ModelSpec, _text_ids

    for entry in spec.get("models") or []:
        model = ModelSpec(**({"name": entry} if isinstance(entry, str) else entry))
        if model.text is None or (model.name, model.weights, model.embed) != (unit["model"], unit["weights"], unit["embed"]):
            continue
        head = [] if model.head == "auto" else [f"head={model.head}"]
        if probe.config_hash(model.name, model.weights, model.embed, *head, *_text_ids(model)) == unit["config_hash"]:
            return zero_shot_for(store, encoder, model.text, model.classes, model.templates)
    return None
