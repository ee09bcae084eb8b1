"""Verdicts on the paper's claims: supported, not_supported or inconclusive, per model, weights,
embedding point and probe setting, from stated criteria with a seeded bootstrap interval.

    criteria = load_criteria()                    # analysis/criteria.yaml (+ a file's overrides)
    rows = claims_records(con, criteria)          # one dict per setting and claim
    run_named(con, "claims", {"criteria": "mine.yaml"})   # the same table as a named query

The named query `claims` (analysis/queries/claims.sql) gathers every check's per-pair values in
DuckDB; `judge` turns them into verdicts. A claim is judged by one or more checks; each is a
statistic (a rate of yes/no values, or a median) that must reach a threshold (>=):

- supported: the lower end of its bootstrap interval is at or above the threshold;
- not_supported: the upper end is below it;
- inconclusive: the interval contains the threshold, or there are fewer than min_n values.

A claim is not_supported if any check is, supported if all are, inconclusive otherwise; its
n, estimate and interval are those of the check that decided it (the first failing check, else
the first undecided one, else the first one), and `checks` lists every check.

The bootstrap is a percentile bootstrap over the per-pair values, drawn without materialising
resamples: the mean of a yes/no resample is Binomial(n, p)/n, and the median of a resample of
sorted values x is x at the k-th smallest of n uniform indices, whose position is n·Beta(k,
n-k+1) (the k-th order statistic of uniforms). Both are the exact bootstrap distributions, so a
check over 75,000 pairs costs a few thousand draws. Seeds derive from the criteria's seed and
the check's identity, so a report is reproducible and independent of the order checks are run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sweep.files import json_safe

CRITERIA_FILE = Path(__file__).with_name("criteria.yaml")
CLAIMS = ("equivalence", "invisibility", "normal_space", "lipschitz", "overgeneralisation")
PROBE_CLAIMS = {"match": ("equivalence", "invisibility", "overgeneralisation"),
                "perturb": ("normal_space",), "lipschitz": ("lipschitz",)}
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not_supported", "inconclusive"
Verdict = Literal["supported", "not_supported", "inconclusive"]


# ---------------------------------------------------------------- criteria

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    min_over_random: float = Field(ge=0)


class LipschitzCriteria(_Claim):
    min_top_over_null: float = Field(gt=0)


class OvergeneralisationCriteria(_Claim):
    min_target_rate: float = Field(ge=0, le=1)
    labellers: list[Literal["head", "knn"]] = Field(min_length=1)


class LargeEquivalenceCriteria(_Claim):  # analysis/geometry_claims.py
    min_median_walk_ratio: float = Field(gt=0)


class PiecewiseLinearCriteria(_Claim):  # analysis/geometry_claims.py
    max_target_over_end: float = Field(gt=0)
    min_linear_rate: float = Field(ge=0, le=1)


class Criteria(_Strict):
    """Every threshold a verdict uses (analysis/criteria.yaml is the documented default)."""

    confidence: float = Field(gt=0.5, lt=1)
    resamples: int = Field(ge=100, le=1_000_000)
    seed: int = Field(ge=0)
    min_n: int = Field(ge=1)
    equivalence: EquivalenceCriteria
    invisibility: InvisibilityCriteria
    normal_space: NormalSpaceCriteria
    lipschitz: LipschitzCriteria
    overgeneralisation: OvergeneralisationCriteria
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


# ---------------------------------------------------------------- bootstrap

def check_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one check: from the criteria's seed and the check's identity."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def bootstrap_rate(n: int, k: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the share k/n of yes values: (resamples,)."""
    return rng.binomial(n, k / n, size=resamples) / n


def bootstrap_median(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the median of `values` (sorted ascending, (n,)): (resamples,).
    The median is the middle value (n odd) or the mean of the two middle values (n even)."""
    n = len(values)
    k = (n + 1) // 2  # the (lower) middle position, 1-based
    u = rng.beta(k, n - k + 1, size=resamples)  # k-th smallest of n uniforms
    low = values[np.minimum((u * n).astype(np.int64), n - 1)]
    if n % 2:
        return low
    # the next order statistic: u + (1 - u) · (the smallest of the n - k uniforms above u)
    u2 = u + (1 - u) * rng.beta(1, n - k, size=resamples)
    high = values[np.minimum((u2 * n).astype(np.int64), n - 1)]
    with np.errstate(invalid="ignore"):
        return np.where(low == high, low, (low + high) / 2)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (bounds are replicate values)."""
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], method="inverted_cdf")
    return float(low), float(high)


# ---------------------------------------------------------------- checks and verdicts

@dataclass
class Check:
    """One statistic of one claim, its threshold and its own verdict."""

    statistic: str
    criterion: str  # e.g. "median PSNR of successful matches ≥ 30 dB"
    threshold: float
    n: int
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: Verdict
    reason: str
    norm: str | None = None
    eps: float | None = None
    n_left_out: int = 0


def num(value: float | None) -> str:
    """A number as the verdict texts write it (3 significant digits)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.3g}"


def _eps_text(norm: str | None, eps: float | None) -> str:
    if eps is None:
        return "?"
    return f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:.3g}"


# statistic -> (kind, criterion text with {thr} (and {norm}, {eps}), what an empty check lacks)
_STATISTICS: dict[str, tuple[str, str, str]] = {
    "success_rate": (
        "rate", "share of ok matches that reach the target's embedding ≥ {thr}",
        "no ok match rows"),
    "median_psnr": (
        "median", "median PSNR of successful matches ≥ {thr} dB",
        "no successful match with a PSNR"),
    "median_ssim": (
        "median", "median SSIM of successful matches ≥ {thr}",
        "no successful match with an SSIM"),
    "quant_rate": (
        "rate", "share of successful matches still matching after 8-bit rounding ≥ {thr}",
        "no successful match with an 8-bit re-check"),
    "median_disp_over_pair": (
        "median", ("median displacement over the pair distance at the smallest {norm} ε ({eps}) "
                   "≥ {thr}"),
        "no perturb rows"),
    "median_over_random": (
        "median", ("median optimised over random-direction displacement at the smallest {norm} "
                   "ε ({eps}) ≥ {thr}"),
        "no perturb rows with a random baseline"),
    "median_top_over_null": (
        "median", "median over pairs of (top over null-space Lipschitz estimate) ≥ {thr}",
        "no pair with both `top` and `null` directions"),
    "head_target_rate": (
        "rate", ("share of successful matches the classifier head labels as the target, over "
                 "pairs it labels differently at source and target, ≥ {thr}"),
        "no classifier-head labels on pairs with different source and target labels"),
    "knn_target_rate": (
        "rate", ("share of successful matches k-NN labels as the target, over pairs it labels "
                 "differently at source and target, ≥ {thr}"),
        "no k-NN labels on pairs with different source and target labels"),
}
_NORM_NAMES = {"linf": "L∞", "l2": "L2"}


def _thresholds(criteria: Criteria) -> dict[str, float]:
    return {
        "success_rate": criteria.equivalence.min_success_rate,
        "median_psnr": criteria.invisibility.min_median_psnr,
        "median_ssim": criteria.invisibility.min_median_ssim,
        "quant_rate": criteria.invisibility.min_quant_rate,
        "median_disp_over_pair": criteria.normal_space.min_disp_over_pair,
        "median_over_random": criteria.normal_space.min_over_random,
        "median_top_over_null": criteria.lipschitz.min_top_over_null,
        "head_target_rate": criteria.overgeneralisation.min_target_rate,
        "knn_target_rate": criteria.overgeneralisation.min_target_rate,
    }


def judge_check(statistic: str, n: int, n_true: int | None, sample: Sequence[float] | None,
                threshold: float, min_n: int, criteria: Criteria, key: str, *,
                norm: str | None = None, eps: float | None = None, n_left_out: int = 0) -> Check:
    """Estimate, bootstrap interval and verdict of one check from its per-pair values: n and
    n_true for a rate, the sorted sample for a median."""
    kind, text, empty = _STATISTICS[statistic]
    criterion = text.format(thr=num(threshold), norm=_NORM_NAMES.get(norm or "", norm),
                            eps=_eps_text(norm, eps))
    estimate = low = high = None
    if n > 0:
        rng = check_rng(criteria.seed, key)
        if kind == "rate":
            k = int(n_true or 0)
            estimate = k / n
            reps = bootstrap_rate(n, k, criteria.resamples, rng)
        else:
            values = np.asarray(sample, dtype=np.float64)
            estimate = float(np.median(values))
            reps = bootstrap_median(values, criteria.resamples, rng)
        low, high = percentile_interval(reps, criteria.confidence)
    pct = f"{100 * criteria.confidence:g}%"
    if n == 0:
        verdict: Verdict = INCONCLUSIVE
        reason = f"n = 0: {empty}"
    elif n < min_n:
        verdict, reason = INCONCLUSIVE, f"n = {n} is below the minimum of {min_n}"
    elif low is not None and low >= threshold:
        verdict = SUPPORTED
        reason = f"the {pct} interval [{num(low)}, {num(high)}] is at or above {num(threshold)}"
    elif high is not None and high < threshold:
        verdict = NOT_SUPPORTED
        reason = f"the {pct} interval [{num(low)}, {num(high)}] is below {num(threshold)}"
    else:
        verdict = INCONCLUSIVE
        reason = f"the {pct} interval [{num(low)}, {num(high)}] contains {num(threshold)}"
    return Check(statistic, criterion, float(threshold), int(n), estimate, low, high, verdict,
                 reason, norm, eps, int(n_left_out))


def combine(checks: Sequence[Check]) -> tuple[Verdict, Check]:
    """A claim's verdict from its checks, and the check that decided it."""
    for verdict in (NOT_SUPPORTED, INCONCLUSIVE):
        for check in checks:
            if check.verdict == verdict:
                return verdict, check
    return SUPPORTED, checks[0]


# ---------------------------------------------------------------- the claims table

CLAIMS_SCHEMA = pa.schema([
    ("model", pa.string()), ("weights", pa.string()), ("embed", pa.string()),
    ("setting", pa.string()), ("claim", pa.string()), ("verdict", pa.string()),
    ("criterion", pa.string()), ("statistic", pa.string()), ("n", pa.int64()),
    ("estimate", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("threshold", pa.float64()), ("reason", pa.string()), ("checks", pa.string()),
    ("probe", pa.string()), ("config_hash", pa.string()), ("params", pa.string()),
])
_EMPTY_STATISTIC = {"equivalence": ("success_rate",),
                    "invisibility": ("median_psnr", "median_ssim", "quant_rate"),
                    "normal_space": ("median_disp_over_pair", "median_over_random"),
                    "lipschitz": ("median_top_over_null",),
                    "overgeneralisation": ("head_target_rate", "knn_target_rate")}


def _claim_checks(claim: str, rows: list[dict[str, Any]], criteria: Criteria,
                  config_hash: str) -> list[Check]:
    thresholds = _thresholds(criteria)
    min_n = criteria.min_n_for(claim)
    if claim == "overgeneralisation":
        wanted = [f"{labeller}_target_rate" for labeller in criteria.overgeneralisation.labellers]
        # a labeller is a check where it labelled something (CLIP models have no head labels)
        rows = [r for r in rows if r["statistic"] in wanted and (r["n"] or r["n_left_out"])]
        if not rows:
            rows = [{"statistic": wanted[0], "n": 0}]
    elif claim == "normal_space":
        rows = sorted(rows, key=lambda r: (r["norm"] or "", r["statistic"] != "median_disp_over_pair"))
        if not rows:
            rows = [{"statistic": s, "n": 0} for s in _EMPTY_STATISTIC[claim]]
    else:
        present = {r["statistic"]: r for r in rows}
        rows = [present.get(s, {"statistic": s, "n": 0}) for s in _EMPTY_STATISTIC[claim]]
    checks = []
    for r in rows:
        statistic = r["statistic"]
        key = f"{config_hash}|{claim}|{statistic}|{r.get('norm')}"
        checks.append(judge_check(statistic, int(r.get("n") or 0), r.get("n_true"),
                                  r.get("sample"), thresholds[statistic], min_n, criteria, key,
                                  norm=r.get("norm"), eps=r.get("eps"),
                                  n_left_out=int(r.get("n_left_out") or 0)))
    return checks


def judge(rows: pa.Table, criteria: Criteria) -> pa.Table:
    """The claims table (CLAIMS_SCHEMA, one row per setting and claim) from the rows of
    claims.sql (one per setting and check, plus one marker row per setting)."""
    records = rows.to_pylist()
    settings: dict[str, dict[str, Any]] = {}
    by_check: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        settings.setdefault(r["config_hash"], r)
        if r["claim"] is not None:
            by_check.setdefault((r["config_hash"], r["claim"]), []).append(r)
    out: list[dict[str, Any]] = []
    for config_hash, s in settings.items():
        for claim in PROBE_CLAIMS.get(s["probe"], ()):
            checks = _claim_checks(claim, by_check.get((config_hash, claim), []), criteria,
                                   config_hash)
            verdict, decisive = combine(checks)
            out.append({
                "model": s["model"], "weights": s["weights"], "embed": s["embed"],
                "setting": s["setting"], "claim": claim, "verdict": verdict,
                "criterion": "; ".join(c.criterion for c in checks)
                             + f" (each {100 * criteria.confidence:g}% bootstrap interval at "
                               f"or above its threshold, n ≥ {criteria.min_n_for(claim)})",
                "statistic": decisive.statistic, "n": decisive.n, "estimate": decisive.estimate,
                "ci_low": decisive.ci_low, "ci_high": decisive.ci_high,
                "threshold": decisive.threshold,
                "reason": f"{decisive.statistic}: {decisive.reason}",
                "checks": json.dumps(json_safe([asdict(c) for c in checks]), ensure_ascii=False,
                                     allow_nan=False),
                "probe": s["probe"], "config_hash": config_hash, "params": s.get("params"),
            })
    order = {c: i for i, c in enumerate(CLAIMS)}
    out.sort(key=lambda r: (r["model"], r["weights"], r["embed"] or "", order[r["claim"]],
                            r["setting"] or "", r["config_hash"]))
    return pa.Table.from_pylist(out, schema=CLAIMS_SCHEMA)


def finish_named(rows: pa.Table, options: Mapping[str, str | None]) -> pa.Table:
    """The named query `claims`' Python step: verdicts under the criteria option."""
    return judge(rows, load_criteria(options.get("criteria")))


def claims_records(con: Any, criteria: Criteria | None = None,
                   params: Mapping[str, str | None] | None = None) -> list[dict[str, Any]]:
    """The claims table as dicts (checks parsed), for the report; the same rows as the named
    query `claims` under the same criteria."""
    from analysis.named import run_named_stage

    rows = run_named_stage(con, "claims", params)
    table = judge(rows, criteria or load_criteria())
    out = table.to_pylist()
    for r in out:
        r["checks"] = json.loads(r["checks"])
    return out
