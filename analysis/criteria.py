"""The criteria behind the verdicts: analysis/criteria.yaml (the documented default) validated,
with a file's overrides merged in (`load_criteria`). analysis/claims.py judges with them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CRITERIA_FILE = Path(__file__).with_name("criteria.yaml")



class _Strict(BaseModel):
    # strict: `min_n: true` or `"3"` is refused, not read as 1 or 3; no NaN or infinity as a
    # threshold (`.nan` would make every check "contains n/a") - as the spec loader refuses them
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _Claim(_Strict):
    min_n: int | None = Field(default=None, ge=1)  # None: the global min_n


class EquivalenceCriteria(_Claim):
    min_success_rate: float = Field(ge=0, le=1)


class InvisibilityCriteria(_Claim):
    min_median_psnr: float
    min_median_ssim: float = Field(ge=-1, le=1)
    min_quant_rate: float = Field(ge=0, le=1)


class NormalSpaceCriteria(_Claim):
    min_disp_over_pair: float = Field(ge=0)
    min_over_control: float = Field(gt=0)


class LipschitzCriteria(_Claim):
    min_anisotropy_over_control: float = Field(gt=0)
    h: float = Field(gt=0)
    min_top_over_null_fd: float = Field(gt=0)
    max_match_nonlinearity: float = Field(gt=0)


class OvergeneralisationCriteria(_Claim):
    min_target_rate: float = Field(ge=0, le=1)
    labellers: list[Literal["head", "knn", "zeroshot"]] = Field(min_length=1)


class TransferCriteria(_Claim):  # "matched images are model-specific" (analysis/transfer.py)
    max_target_closer_rate: float = Field(ge=0, le=1)


class LargeEquivalenceCriteria(_Claim):  # probe equivalence (analysis/claims.py)
    min_median_walk_ratio: float = Field(gt=0)


class PiecewiseLinearCriteria(_Claim):  # probe equivalence (analysis/claims.py)
    max_target_over_end: float = Field(gt=0)
    min_linear_rate: float = Field(ge=0, le=1)


class Criteria(_Strict):
    """Every threshold a verdict uses (analysis/criteria.yaml is the documented default)."""

    confidence: float = Field(gt=0.5, lt=1)
    resamples: int = Field(ge=100, le=1_000_000)
    seed: int = Field(ge=0)
    min_n: int = Field(ge=1)
    dependence: Literal["auto", "components", "disjoint", "none"] = "auto"
    equivalence: EquivalenceCriteria
    invisibility: InvisibilityCriteria
    normal_space: NormalSpaceCriteria
    lipschitz: LipschitzCriteria
    overgeneralisation: OvergeneralisationCriteria
    transfer: TransferCriteria = TransferCriteria(max_target_closer_rate=0.5)
    large_equivalence: LargeEquivalenceCriteria
    piecewise_linear: PiecewiseLinearCriteria

    def min_n_for(self, claim: str) -> int:
        own = getattr(self, claim).min_n
        return self.min_n if own is None else own


class CriteriaError(ValueError):
    """A criteria file that cannot be read or does not validate (one-line message)."""


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CriteriaError(f"criteria file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise CriteriaError(f"cannot read criteria file {path}: {type(err).__name__}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise CriteriaError(f"criteria file {path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CriteriaError(f"criteria file {path} must hold a mapping of criteria, "
                            f"not {type(data).__name__}")
    return data


def load_criteria(path: str | Path | None = None) -> Criteria:
    """The shipped criteria, with the keys of the YAML file `path` (if any) changed."""
    data = _read_yaml(CRITERIA_FILE)
    source = str(CRITERIA_FILE)
    if path is not None and str(path).strip():
        data = _merge(data, _read_yaml(Path(path).expanduser()))
        source = str(path)
    try:
        return Criteria.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise CriteriaError(f"criteria file {source}: {where}: {first['msg']}") from None
