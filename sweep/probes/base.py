"""The probe contract: hyper-parameters only on the object, the encoder passed at call time,
and one fixed outer routine (check inputs -> run the batched loop -> check outputs) that every
probe goes through and none can skip (the foolbox-3 shape).

A probe turns `PairInput`s into `PairResult`s. Results come back in the order pairs finish,
not the order they went in (continuous batching): match them by `pair_id`.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from sweep.errors import UserError


@dataclass
class PairInput:
    """One (source, target) pair, already at the encoder's input size."""

    pair_id: str
    src: torch.Tensor  # (3, H, W) float32 in [0, 1]
    tgt: torch.Tensor  # (3, H, W) float32 in [0, 1]
    src_label: int | None = None
    tgt_label: int | None = None


@dataclass
class PairResult:
    """What a probe found for one pair: rows of its table (without the identity columns, which
    the caller adds) and, for the gallery and the single-pair command, the images involved."""

    pair_id: str
    rows: list[dict[str, Any]]
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # "src", "adv", "tgt": (3, H, W)
    error: str | None = None  # set when the probe itself failed on this pair (rows then empty)
    # Clean fp32 embeddings of "src" and "tgt", (D,) each, and per row the probed image's
    # embedding (D,) or None: the caller turns these into k-NN labels over the run's own images.
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    row_embeddings: list[torch.Tensor | None] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. singular values for the CLI


@dataclass(frozen=True)
class Passes:
    """Encoder passes for one pair (image rows), as the planner (sweep/planning) counts them:
    `plain` forwards without a gradient, `backward` forward + backward to the input, `jvp`
    forward-mode directional derivatives, `rows` backward rows that share one forward (the fp32
    Jacobian of `lipschitz`'s `null`: torch.vmap over one torch.func.vjp; that forward is
    counted once in `plain`, each row is the backward half alone).

    Precision is not a field: the planner times `backward` at the probe's `loop_precision` (bf16
    or fp32 step rate) and `plain`, `jvp` at the fp32 rates; float64 passes (lipschitz's float64
    copy of the model) are timed at the fp32 rates too (`LipschitzProbe.loop_precision` says
    why). `rows` exist only in fp32 and have their own rate (`Rates.row`), so that an fp32
    Jacobian row is timed apart from a float64 forward + backward row. A probe whose passes mix
    precisions splits them with `Probe.timed_passes`."""

    plain: float = 0
    backward: float = 0
    jvp: float = 0
    rows: float = 0

    @property
    def total(self) -> float:
        """Image passes: every forward, backward and tangent pass over one image counts one."""
        return self.plain + 2 * self.backward + 2 * self.jvp + self.rows

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.plain + other.plain, self.backward + other.backward, self.jvp + other.jvp,
                      self.rows + other.rows)

    def __sub__(self, other: "Passes") -> "Passes":
        return self + other * -1

    def __mul__(self, k: float) -> "Passes":
        return Passes(self.plain * k, self.backward * k, self.jvp * k, self.rows * k)


class ProbeParams(BaseModel):
    """Base of every probe's parameters: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Probe(ABC):
    """A probe: `name`, its `Params` model, and `_run`, called only through `run`."""

    name: ClassVar[str]
    Params: ClassVar[type[ProbeParams]]

    def __init__(self, params: ProbeParams) -> None:
        self.params = params

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Probe":
        try:
            return cls(cls.Params(**dict(values)))
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "?"
            if first["type"] == "extra_forbidden":
                known = ", ".join(sorted(cls.Params.model_fields))
                raise UserError(f"unknown {cls.name} parameter {key!r} (known: {known})") from None
            raise UserError(f"bad {cls.name} parameter {key}={first.get('input')!r}: {first['msg']}") from None

    def params_json(self) -> str:
        return json.dumps(self.params.model_dump(mode="json"), sort_keys=True)

    def config_hash(self, *parts: str) -> str:
        """Stable id of this probe setting combined with e.g. model, weights, embedding point."""
        text = json.dumps([self.name, self.params_json(), *parts])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def run(
        self,
        encoder: Any,
        pairs: Iterable[PairInput],
        *,
        batch_size: int = 16,
        seed: int = 0,
    ) -> Iterator[PairResult]:
        """The fixed outer routine: validate each pair, run the probe, validate each result."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        refused: list[PairResult] = []  # pairs that fail the input check become error results

        def checked() -> Iterator[PairInput]:
            for pair in pairs:
                problem = self._input_problem(pair, encoder)
                if problem is None:
                    yield pair
                else:
                    refused.append(PairResult(pair.pair_id, rows=[], error=problem))

        for result in self._run(encoder, checked(), batch_size=batch_size, seed=seed):
            yield from _drain(refused)
            yield self._check_result(result)
        yield from _drain(refused)

    @abstractmethod
    def _run(
        self,
        encoder: Any,
        pairs: Iterator[PairInput],
        *,
        batch_size: int,
        seed: int,
    ) -> Iterator[PairResult]:
        """Yield one PairResult per input pair, in any order."""

    # -- what the planner knows (sweep/planning): written from the probe's own loop, and the
    # tests count the passes of a real run against it -------------------------------------------
    def passes_per_pair(self, dims: tuple[int, int] | None = None) -> Passes:
        """One pair's encoder passes: exact where the work does not depend on the data, else an
        upper bound (`bound_note` says why). `dims` = (D, d), the embedding size and the number
        of input values, for a probe whose count depends on them (`needs_dims`)."""
        raise ValueError(f"no pass count for probe {self.name!r}")

    def needs_dims(self) -> bool:
        """Whether the count depends on the model's embedding and input sizes."""
        return False

    def bound_note(self) -> str:
        """'' where `passes_per_pair` is exact; else why it is an upper bound."""
        return ""

    def expected_passes(self, upper: Passes, mean_steps: float, confirmed: float) -> Passes:
        """The expected count, given this setting's earlier rows: `mean_steps` gradient steps a
        pair took on average and the share `confirmed` of pairs whose stop an fp32 forward
        confirmed (only a probe that stops on its own learns from them)."""
        return upper

    def loop_precision(self, cuda: bool) -> str:
        """The precision of the gradient steps: bf16 on CUDA unless the setting says fp32."""
        precision = getattr(self.params, "precision", "fp32")
        return "fp32" if precision == "fp32" or not cuda else "bf16"

    def timed_passes(self, passes: Passes, cuda: bool) -> list[tuple[Passes, str]]:
        """`passes` (this setting's count per pair, or its expected count) in parts by the
        precision their gradient steps run at, for the planner's time: one part at
        `loop_precision` unless the probe runs steps of two precisions (`equivalence`: its match
        run's steps at the match's precision, the walk's in fp32)."""
        return [(passes, self.loop_precision(cuda))]

    # -- what `vitsweep probe` shows for one pair ------------------------------------------------
    def cli_fields(self, result: PairResult) -> dict[str, Any]:
        """The probe's part of metrics.json for one pair."""
        return {"results": result.rows}

    def cli_summary(self, fields: dict[str, Any]) -> list[str]:
        """Lines printed for one pair (`fields` as `cli_fields` made them, NaN kept)."""
        return [f"{self.name}: {len(fields.get('results', []))} rows"]

    @staticmethod
    def _input_problem(pair: PairInput, encoder: Any) -> str | None:
        expected = tuple(encoder.input_size)
        for role, image in (("source", pair.src), ("target", pair.tgt)):
            if tuple(image.shape) != expected:
                return f"{role} has shape {tuple(image.shape)}, the encoder wants {expected}"
            if not bool(torch.isfinite(image).all()) or image.min() < 0 or image.max() > 1:
                return f"{role} pixels outside [0, 1]"
        return None

    @staticmethod
    def _check_result(result: PairResult) -> PairResult:
        if result.error is None:
            for row in result.rows:
                for key, value in row.items():
                    if isinstance(value, float) and math.isnan(value) and key not in _MAY_BE_NAN:
                        result.error = f"non-finite {key} (the embedding diverged)"
                        result.rows = []
                        break
                if result.error:
                    break
        for name, image in result.images.items():
            if image.dim() != 3:
                raise AssertionError(f"image {name} of pair {result.pair_id} is not (3, H, W)")
        return result


def _drain(queue: list[PairResult]) -> Iterator[PairResult]:
    while queue:
        yield queue.pop(0)


# Columns allowed to be NaN in an ok row (undefined rather than diverged).
_MAY_BE_NAN = frozenset({"psnr", "nonlinearity", "disp_over_pair", "random_disp_over_pair"})
