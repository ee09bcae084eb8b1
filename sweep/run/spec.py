"""Sweep specs: a YAML file, validated, expanded into work units (model x probe setting x shard).

    name: demo                      # optional, names the run id
    models:
      - {name: vit_tiny_patch16_224, weights: "random:0", embed: pre_logits}
      - vit_small_patch16_224       # shorthand: weights random:0, embed pre_logits
      - {name: my_vit, head: imagenet-1k}   # head labels: auto (default) | none | a label set
                                            # timm knows | file:<class names, one a line>
    probes:
      - name: match
        params: {max_steps: [100, 1000], lr: 0.01}     # a list of a grid-able key = a grid
      - name: perturb
        params: {eps: [0.0039, 0.0078]}                # eps takes a list itself: one setting
    shards: data/pairs-{000000..000099}.tar            # folder, glob, brace pattern, s3://...
    batch_size: 32
    seed: 0
    output: runs/demo               # local path or URI (s3://bucket/prefix); `--out` overrides
    gallery: 4                      # images stored per unit
    max_attempts: 3                 # tries per unit before it is recorded as failed
    compile: false                  # torch.compile the probes' hot loop (worth it on GPUs)
    knn_k: 5                        # voters of the k-NN labels (labels pass, after the units)
    knn_bank: null                  # k-NN bank: null = every clean image of the run; or a
                                    # reference shard set (folder, glob, ...) used instead

Grids: a list value expands into one setting per element (Cartesian product over all such
keys) when the probe's parameter does not itself take a list; for a parameter that does (e.g.
perturb's `eps`), a list of lists is the grid.

Unit ids hash everything that changes a unit's rows: model, weights, embedding point, probe,
its validated parameters, shard URL and seed. `batch_size` is deliberately left out: rows never
influence each other inside a batch and every random draw is seeded per item, so a rerun with
another batch size (say, on a GPU with less memory) resumes instead of starting over.
`gallery`, `max_attempts` and `compile` are left out as well (they do not change the measured rows),
and so are `knn_k` and `knn_bank`: k-NN labels are computed after the units, by the labels pass.

`demo_spec_data()` and `with_weights(data, weights)` give `vitsweep demo`'s packaged spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator, model_validator

from sweep.errors import UserError

_WEIGHTS_HELP = "pretrained, random:<seed> or file:<path>"


class ModelSpec(BaseModel):
    """One encoder: timm `name[.tag]` or `package.module:callable`, its weights, embedding point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    weights: str = "random:0"
    embed: str = "pre_logits"
    head: str = Field(default="auto", min_length=1)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: str) -> str:
        if value == "pretrained" or value == "factory":
            return value
        if value.startswith("random:") and value[7:].isdigit():
            return value
        if value.startswith("file:") and len(value) > 5:
            return value
        raise ValueError(f"must be {_WEIGHTS_HELP}")

    @field_validator("embed")
    @classmethod
    def _check_embed(cls, value: str) -> str:
        kind, _, block = value.partition(":")
        if value == "pre_logits" or (kind in ("cls", "mean_patch") and block.lstrip("-").isdigit()):
            return value
        raise ValueError("must be pre_logits, cls:<block> or mean_patch:<block>")


class ProbeSpec(BaseModel):
    """One probe and its parameters (list values of grid-able keys form a grid)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(BaseModel):
    """The whole YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    models: list[ModelSpec] = Field(min_length=1)
    probes: list[ProbeSpec] = Field(min_length=1)
    shards: str | list[str]
    # strict: `seed: true` is not seed 1, `batch_size: 8.5` is not 8, `compile: "no"` is not False
    batch_size: StrictInt = Field(default=16, ge=1, le=65536)
    seed: StrictInt = Field(default=0, ge=0)
    output: str | None = None
    gallery: StrictInt = Field(default=4, ge=0, le=1000)
    max_attempts: StrictInt = Field(default=3, ge=1, le=100)
    compile: StrictBool = False
    knn_k: StrictInt = Field(default=5, ge=1, le=1000)
    knn_bank: str | list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, values: Any) -> Any:
        """`models: [vit_tiny_patch16_224]` and `probes: [match]`: a bare name, defaults for the rest."""
        if isinstance(values, dict):
            values = dict(values)
            for key in ("models", "probes"):
                if isinstance(values.get(key), list):
                    values[key] = [{"name": m} if isinstance(m, str) else m for m in values[key]]
        return values


@dataclass(frozen=True)
class WorkUnit:
    """One model x one probe setting x one shard: the grain of scheduling, retry and resume."""

    unit_id: str
    model: str
    weights: str
    embed: str
    probe: str
    params: dict[str, Any] = field(hash=False, compare=False)
    params_json: str
    config_hash: str
    shard: str
    seed: int
    batch_size: int
    gallery: int
    compile: bool = False
    head: str = "auto"  # the head's label set: auto | none | a timm label set | file:<path>


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with its expanded shard list and work units."""

    spec: SweepSpec
    source: str  # the file it came from, for messages
    shards: list[str]
    settings: list[tuple[Any, dict[str, Any]]]  # (built probe, its params as written) per setting
    units: list[WorkUnit]

    def to_yaml(self) -> str:
        """The spec as run: validated, defaults filled in, shard patterns kept as written."""
        return yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False)

    @property
    def spec_hash(self) -> str:
        return _hash(self.spec.model_dump(mode="json"))

    @property
    def result_hash(self) -> str:
        """Hash of what determines the rows (unit ids and gallery size), not of execution
        settings (batch size, attempts, output): a rerun with a different result_hash into the
        same run directory would mix two experiments."""
        return _hash([sorted(u.unit_id for u in self.units), self.spec.gallery])


def load_spec(path: str | Path, output: str | None = None) -> LoadedSpec:
    """Read, validate and expand a spec file; every problem is one UserError line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a spec file (give the YAML file, e.g. {path}/spec.yaml)")
    if not path.is_file():
        raise UserError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (a spec is YAML)") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the spec ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a spec must be a YAML mapping (models, probes, shards, ...)")
    if output is not None:
        data["output"] = output
    return parse_spec(data, source=str(path))


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> LoadedSpec:
    try:
        spec = SweepSpec(**data)
    except ValidationError as err:
        raise UserError(f"{source}: {_describe(err)}") from None
    _check_models(spec, source)
    settings = _expand_probes(spec, source)
    _check_heads(spec, source)
    shards = _expand_shards(spec, source)
    if spec.knn_bank is not None:  # the labels pass reads it after the units: check it before
        from sweep.data.shardset import expand_shard_urls

        try:
            expand_shard_urls(spec.knn_bank)
        except UserError as err:
            raise UserError(f"{source}: knn_bank: {err}") from None
    units: dict[str, WorkUnit] = {}  # by id: a model listed twice is one set of units
    for model in spec.models:
        for probe, params in settings:
            for shard in shards:
                unit = _make_unit(spec, model, probe, params, shard)
                units.setdefault(unit.unit_id, unit)
    return LoadedSpec(spec=spec, source=source, shards=shards, settings=settings, units=list(units.values()))


def unit_id_of(model: ModelSpec, probe: str, params_json: str, shard: str, seed: int) -> str:
    head = [] if model.head == "auto" else [f"head={model.head}"]  # the default keeps earlier ids
    return _hash([model.name, model.weights, model.embed, probe, params_json, shard, seed, *head])[:20]


def _check_heads(spec: SweepSpec, source: str) -> None:
    """A head label set the user named must fit its model: checked before any unit runs."""
    from sweep.encoders import describe_head

    for index, model in enumerate(spec.models):
        if model.head != "auto":
            try:
                describe_head(model.name, model.weights, model.embed, model.head)
            except UserError as err:
                raise UserError(f"{source}: models.{index}.head: {err}") from None


def _make_unit(spec: SweepSpec, model: ModelSpec, probe: Any, params: dict[str, Any], shard: str) -> WorkUnit:
    params_json = probe.params_json()
    return WorkUnit(
        unit_id=unit_id_of(model, probe.name, params_json, shard, spec.seed),
        model=model.name,
        weights=model.weights,
        embed=model.embed,
        probe=probe.name,
        params=params,
        params_json=params_json,
        config_hash=probe.config_hash(model.name, model.weights, model.embed,
                                      *([] if model.head == "auto" else [f"head={model.head}"])),
        shard=shard,
        seed=spec.seed,
        batch_size=spec.batch_size,
        gallery=spec.gallery,
        compile=spec.compile,
        head=model.head,
    )


def _expand_probes(spec: SweepSpec, source: str) -> list[tuple[Any, dict[str, Any]]]:
    from sweep.probes import PROBES, build_probe  # torch import: only once a spec is parsed

    settings: list[tuple[Any, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for index, probe_spec in enumerate(spec.probes):
        if probe_spec.name not in PROBES:
            known = ", ".join(sorted(PROBES))
            raise UserError(f"{source}: probes.{index}.name: unknown probe {probe_spec.name!r} (known: {known})")
        params_cls = PROBES[probe_spec.name].Params
        for key, value in probe_spec.params.items():
            if value == []:
                raise UserError(f"{source}: probes.{index}.params.{key}: an empty list gives no setting to run")
            if value is None or (isinstance(value, list) and any(v is None for v in value)):
                raise UserError(
                    f"{source}: probes.{index}.params.{key}: null is not a value (leave the key out for its default)"
                )
        for params in expand_grid(probe_spec.params, params_cls):
            try:
                probe = build_probe(probe_spec.name, params)
            except UserError as err:
                raise UserError(f"{source}: probes.{index}.params: {err}") from None
            params_json = probe.params_json()
            if (probe_spec.name, params_json) not in seen:  # a grid may repeat a setting
                seen.add((probe_spec.name, params_json))
                settings.append((probe, params))
    return settings


def expand_grid(params: dict[str, Any], params_cls: type[BaseModel] | None = None) -> list[dict[str, Any]]:
    """Cartesian product over grid-able list values (see the module docstring)."""
    axes: list[list[Any]] = []
    for key, value in params.items():
        takes_list = _takes_list(params_cls, key)
        is_grid = isinstance(value, list) and (not takes_list or (value and all(isinstance(v, list) for v in value)))
        axes.append(value if is_grid else [value])
    return [dict(zip(params, combo)) for combo in itertools.product(*axes)]


def _takes_list(params_cls: type[BaseModel] | None, key: str) -> bool:
    fields = getattr(params_cls, "model_fields", {})
    if key not in fields:
        return False
    return _annotation_takes_list(fields[key].annotation)


def _annotation_takes_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_annotation_takes_list(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _annotation_takes_list(typing.get_args(annotation)[0])
    return False


def _check_models(spec: SweepSpec, source: str) -> None:
    """What can be known about each model before Ray starts: a timm name is in timm's registry,
    its embedding block exists in the architecture, a `file:` weights file exists."""
    checked: set[tuple[str, str]] = set()
    for index, model in enumerate(spec.models):
        if model.weights.startswith("file:"):
            weights = Path(model.weights[5:]).expanduser()
            if not weights.is_file():
                what = "is a folder" if weights.is_dir() else "does not exist"
                raise UserError(f"{source}: models.{index}.weights: weights file {str(weights)!r} {what}")
        if ":" in model.name or (model.name, model.embed) in checked:
            continue  # a package.module:callable factory is checked when a worker imports it
        from sweep.encoders import check_timm_model

        try:
            check_timm_model(model.name, model.embed)
        except UserError as err:
            raise UserError(f"{source}: models.{index}: {err}") from None
        checked.add((model.name, model.embed))


def _expand_shards(spec: SweepSpec, source: str) -> list[str]:
    from sweep.data.shardset import expand_shard_urls

    try:
        shards = expand_shard_urls(spec.shards)
    except UserError as err:
        raise UserError(f"{source}: shards: {err}") from None
    if not shards:
        raise UserError(f"{source}: shards: {spec.shards!r} matches no shard")
    return list(dict.fromkeys(shards))  # keep order, drop repeats


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if first["type"] == "missing":
        return f"missing key {key!r}"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "int_type" and isinstance(first.get("input"), bool):
        message = "must be a whole number, not true/false"
    return f"{key}: {message} (got {first.get('input')!r})"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---- the demo (`vitsweep demo`) ------------------------------------------------------------------
DEMO_SPEC = "demo.yaml"  # package data: sweep/examples/demo.yaml
PRETRAINED_MODEL = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
# The paper preset fills in lr 0.08, tau 1e-4, min_cos 0.97, gd, fp32; the step cap is the demo's.
PRETRAINED_MATCH = {"preset": "paper", "max_steps": 300, "log_every": 5}
PRETRAINED_MAX_STEPS = PRETRAINED_MATCH["max_steps"]


def demo_spec_data() -> dict[str, Any]:
    """The packaged demo spec (sweep/examples/demo.yaml) as data."""
    from sweep.examples import example_spec

    try:
        return example_spec(DEMO_SPEC)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"the packaged {DEMO_SPEC} cannot be read ({err}): reinstall vitsweep") from None


def with_weights(data: dict[str, Any], weights: str) -> dict[str, Any]:
    """The demo spec for `weights`; `pretrained` means the trained ViT-Tiny and the paper's match preset."""
    model = dict(data["models"][0])
    try:
        ModelSpec(name=model["name"], weights=weights)
    except ValidationError as err:
        raise UserError(f"--weights: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    model["weights"] = weights
    if weights == "pretrained":
        model["name"] = PRETRAINED_MODEL
        data["probes"] = [
            {"name": "match", "params": dict(PRETRAINED_MATCH)} if p["name"] == "match" else p for p in data["probes"]
        ]
    data["models"] = [model]
    return data
