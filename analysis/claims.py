"""Verdicts on the paper's claims: supported, not_supported or inconclusive, per model, weights,
embedding point and probe setting, from stated criteria (analysis/criteria.py) with an exact
interval (analysis/intervals.py). docs/findings.md explains every rule.

    rows = claims_records(con, load_criteria())   # one dict per setting and claim
    run_named(con, "claims", {"criteria": "mine.yaml"})   # the same table as a named query

claims.sql gathers every check's per-pair values with their image keys; `judge` turns them into
verdicts. A check is a rate (Clopper-Pearson) or a median (order statistics) against a threshold
(>=; <= for the match path's nonlinearity), counted by image (`criteria.dependence`: pairs that
share an image are one unit; n is the number of units, and n_pairs, n_src, n_tgt, n_clusters are
reported). supported: the whole interval on the claimed side; not_supported: the whole interval
on the other; inconclusive otherwise or below min_n units (`intervals.verdict`).

Checks a shape-matched Gaussian linear map already passes (`CONTROLLED`) are judged against it:
the threshold is a factor of the control's value (`control_estimate`), from a
`control:gaussian:<model>` run of the same probe params ('run') or the closed form
`intervals.gaussian_reference(d, D)` where the units recorded the shapes ('closed_form'); with
neither the check is inconclusive. A claim is not_supported if any check is, supported if all
are, inconclusive otherwise; its n, estimate and interval are the deciding check's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from analysis import intervals
from analysis.caveats import random_weights_caveat  # noqa: F401 (public here: the claims API)
from analysis.claim_statistics import (
    AT_MOST,
    CONTROLLED,
    EMPTY_STATISTIC,
    NO_CONTROL,
    NORM_NAMES,
    STATISTICS,
    thresholds,
)
from analysis.criteria import (  # noqa: F401 (public here: the claims API)
    CRITERIA_FILE,
    Criteria,
    CriteriaError,
    load_criteria,
)
from analysis.observations import Observations, list_cell
from sweep.files import json_safe

CLAIMS = ("equivalence", "invisibility", "normal_space", "lipschitz", "overgeneralisation",
          "large_equivalence", "piecewise_linear")
PROBE_CLAIMS = {"match": ("equivalence", "invisibility", "overgeneralisation"),
                "perturb": ("normal_space",), "lipschitz": ("lipschitz",),
                "equivalence": ("large_equivalence", "piecewise_linear")}
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not_supported", "inconclusive"
Verdict = Literal["supported", "not_supported", "inconclusive"]
ObservationsLike = Observations | Sequence[Mapping[str, Any]] | pa.Array | None


# ---------------------------------------------------------------- seeds

def check_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one check (for a bootstrap check): from the criteria's seed and the
    check's identity, so a report is reproducible and independent of the order of checks."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


# ---------------------------------------------------------------- checks and verdicts

@dataclass
class Check:
    """One statistic of one claim, its threshold and its own verdict.

    n: the independent units behind the interval (clusters of pairs that share images, see
    `Criteria.dependence`); n_pairs the pairs used, n_src / n_tgt their distinct images,
    n_set_aside the pairs left unused so that the used ones share no image. method: how the
    interval was computed ("clopper_pearson_by_cluster", "order_statistic_by_cluster"); ranks and
    coverage: the order statistics of a median interval and its exact coverage.
    control_estimate: the shape-matched Gaussian map's value of the same statistic (the threshold
    is then a factor of it), control_source: "run" or "closed_form" (None: no control)."""

    statistic: str
    criterion: str  # e.g. "median PSNR of successful matches ≥ 30 dB"
    threshold: float | None  # None: a controlled check without a control
    n: int
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: Verdict
    reason: str
    norm: str | None = None
    eps: float | None = None
    n_left_out: int = 0
    direction: str = ">="
    method: str | None = None
    ranks: list[int] | None = None
    coverage: float | None = None
    n_pairs: int = 0
    n_src: int | None = None
    n_tgt: int | None = None
    n_clusters: int = 0
    n_set_aside: int = 0
    clustered_by: str | None = None
    h: float | None = None
    control_estimate: float | None = None
    control_source: str | None = None
    control_factor: float | None = None


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


def success_text(params: str | Mapping[str, Any] | None) -> str:
    """The match probe's own success test, from its params (the defaults where not recorded)."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            params = None
    p = params if isinstance(params, Mapping) else {}
    if p.get("preset") == "paper":
        tau = p.get("tau") if p.get("tau") is not None else 1e-4
        cos = p.get("min_cos") if p.get("min_cos") is not None else 0.97
        return f"(‖f(x) − f(t)‖² < {tau:.0e} and cos > {cos:g})"
    rho = p.get("rho") if p.get("rho") is not None else 0.05
    cos = p.get("min_cos") if p.get("min_cos") is not None else 0.99
    return f"(rel_dist ≤ {rho:g} and cos ≥ {cos:g})"


def _clusters(obs: Observations, by: str) -> intervals.PairClusters:
    """Independent units of a check's pairs, decided on image keys alone (ties: pair-id order)."""
    return intervals.pair_clusters(obs.s, obs.t, by=by, order=obs.pair_order())  # type: ignore[arg-type]


def _control(statistic: str, norm: str | None, ctrl: Observations,
             input_dim: int | None, embed_dim: int | None) -> tuple[float | None, str | None]:
    """(the control's value of the statistic, 'run' | 'closed_form') or (None, None)."""
    if len(ctrl):
        values = ctrl.y[~np.isnan(ctrl.y)]
        if values.size:
            return float(np.median(values)), "run"
    if input_dim and embed_dim:
        ref = intervals.gaussian_reference(int(input_dim), int(embed_dim), CONTROLLED[statistic],
                                           norm=norm if statistic == "median_over_random" else None)
        if ref is not None:
            return float(ref), "closed_form"
    return None, None


def judge_check(statistic: str, obs: ObservationsLike, threshold: float,
                min_n: int, criteria: Criteria, *, norm: str | None = None,
                eps: float | None = None, n_left_out: int = 0, h: float | None = None,
                params: str | Mapping[str, Any] | None = None,
                ctrl: ObservationsLike = None, input_dim: int | None = None,
                embed_dim: int | None = None) -> Check:
    """Estimate, exact interval and verdict of one check from its per-pair observations
    `obs` ({"y": value (1/0 for a rate), "s": src_key, "t": tgt_key, "p": pair_id}), counted
    by image under criteria.dependence. A controlled statistic (`CONTROLLED`) is judged against
    `threshold` × the Gaussian control's value (from `ctrl`, the control run's observations, or
    the closed form at input_dim / embed_dim)."""
    kind, text, empty = STATISTICS[statistic]
    direction: intervals.Direction = "<=" if statistic in AT_MOST else ">="
    obs = Observations.of(obs)
    control = source = None
    factor = None
    if statistic in CONTROLLED:
        factor = float(threshold)
        control, source = _control(statistic, norm, Observations.of(ctrl), input_dim, embed_dim)
        threshold = factor * control if control is not None else None
    ref = (f" ({num(control)} from a control run, so ≥ {num(threshold)})" if source == "run" else
           f" ({num(control)} in closed form, so ≥ {num(threshold)})" if source == "closed_form"
           else "")
    criterion = text.format(thr=num(threshold), norm=NORM_NAMES.get(norm or "", norm),
                            eps=_eps_text(norm, eps), h=num(h), success=success_text(params),
                            factor=num(factor), ref=ref,
                            tol=num(criteria.piecewise_linear.max_target_over_end))
    y = obs.y
    cl = _clusters(obs, criteria.dependence)
    if kind == "rate":
        iv = intervals.rate_interval_clustered(y, cl, criteria.confidence)
    else:
        iv = intervals.median_interval_clustered(y, cl, criteria.confidence)
    n = iv.n
    units = "independent units" if criteria.dependence != "none" else "pairs"
    pct = f"{100 * criteria.confidence:g}%"
    span = f"the {pct} exact interval [{num(iv.ci_low)}, {num(iv.ci_high)}]"
    if iv.n_pairs == 0:
        verdict: Verdict = INCONCLUSIVE
        reason = f"n = 0: {empty}"
    elif n < min_n:
        verdict = INCONCLUSIVE
        reason = (f"n = {n} {units} ({iv.n_pairs} pairs, {iv.n_src} sources, {iv.n_tgt} targets) "
                  f"is below the minimum of {min_n}")
    elif control is None and factor is not None:
        verdict, reason = INCONCLUSIVE, NO_CONTROL
    else:
        verdict = intervals.verdict(iv.ci_low, iv.ci_high, float(threshold), direction)
        side, other = ("at or below", "above") if direction == "<=" else ("at or above", "below")
        if verdict == SUPPORTED:
            reason = f"{span} is {side} {num(threshold)}"
        elif verdict == NOT_SUPPORTED:
            reason = f"{span} is {other} {num(threshold)}"
        else:
            reason = f"{span} contains {num(threshold)}"
    return Check(statistic, criterion, None if threshold is None else float(threshold), int(n), iv.estimate, iv.ci_low,
                 iv.ci_high, verdict, reason, norm, eps, int(n_left_out) + iv.n_left_out,
                 direction, iv.method, list(iv.ranks) if iv.ranks else None, iv.coverage,
                 iv.n_pairs, iv.n_src, iv.n_tgt, iv.n_clusters, iv.n_set_aside, iv.clustered_by,
                 h, control, source, factor)


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
    ("n_pairs", pa.int64()), ("n_src", pa.int64()), ("n_tgt", pa.int64()),
    ("n_clusters", pa.int64()), ("method", pa.string()),
    ("control_estimate", pa.float64()), ("control_source", pa.string()),
])


def _at_h(obs: Observations, h: float) -> tuple[Observations, float | None]:
    """The observations at the grid step nearest (in log scale) to the stated h, and that step."""
    hs = np.unique(obs.h[obs.h > 0]).tolist()
    if not hs:
        return Observations.empty(), None
    best = min(hs, key=lambda x: abs(math.log(x) - math.log(h)))
    return obs.select(obs.h == best), best


def _claim_checks(claim: str, rows: list[dict[str, Any]], criteria: Criteria,
                  params: str | None = None) -> list[Check]:
    limits = thresholds(criteria)
    min_n = criteria.min_n_for(claim)
    if claim == "overgeneralisation":
        wanted = [f"{labeller}_target_rate" for labeller in criteria.overgeneralisation.labellers]
        # a labeller is a check where it labelled something (CLIP models have no head labels)
        rows = [r for r in rows if r["statistic"] in wanted
                and (len(Observations.of(r.get("obs"))) or r["n_left_out"])]
        if not rows:
            rows = [{"statistic": wanted[0]}]
    elif claim == "normal_space":
        rows = sorted(rows, key=lambda r: (r["norm"] or "", r["statistic"] != "median_disp_over_pair"))
        if not rows:
            rows = [{"statistic": s} for s in EMPTY_STATISTIC[claim]]
    else:
        present = {r["statistic"]: r for r in rows}
        rows = [present.get(s, {"statistic": s}) for s in EMPTY_STATISTIC[claim]]
        if claim == "lipschitz" and len(Observations.of(present.get("median_match_nonlinearity",
                                                                     {}).get("obs"))):
            rows.append(present["median_match_nonlinearity"])  # only where `match` ran
    checks = []
    for r in rows:
        statistic = r["statistic"]
        obs, h = Observations.of(r.get("obs")), None
        if statistic == "median_top_over_null_fd":
            obs, h = _at_h(obs, criteria.lipschitz.h)
            h = h if h is not None else criteria.lipschitz.h
        elif statistic == "linear_rate":  # y: the segment's deviation over the match tolerance
            obs = replace(obs, y=(obs.y <= criteria.piecewise_linear.max_target_over_end).astype(np.float64))
        checks.append(judge_check(statistic, obs, limits[statistic], min_n, criteria,
                                  norm=r.get("norm"), eps=r.get("eps"),
                                  n_left_out=int(r.get("n_left_out") or 0), h=h, params=params,
                                  ctrl=r.get("ctrl"), input_dim=r.get("input_dim"),
                                  embed_dim=r.get("embed_dim")))
    return checks


def _criterion_suffix(criteria: Criteria, claim: str) -> str:
    pct = f"{100 * criteria.confidence:g}%"
    by = ("every pair counted as independent" if criteria.dependence == "none"
          else "pairs that share an image counted as one unit")
    return (f" (each {pct} exact interval: Clopper-Pearson for rates, order statistics for "
            f"medians; {by}; on the claimed side of its threshold, n ≥ {criteria.min_n_for(claim)})")


def judge(rows: pa.Table, criteria: Criteria) -> pa.Table:
    """The claims table (CLAIMS_SCHEMA, one row per setting and claim) from the rows of
    claims.sql (one per setting and check, plus one marker row per setting)."""
    records = rows.drop_columns([c for c in ("obs", "ctrl") if c in rows.column_names]).to_pylist()
    for name in ("obs", "ctrl"):
        if name in rows.column_names:
            column = rows.column(name)
            for i, r in enumerate(records):
                r[name] = Observations.of(list_cell(column, i))
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
                                   s.get("params"))
            verdict, decisive = combine(checks)
            controlled = decisive if decisive.control_source else next(
                (c for c in checks if c.control_source), None)
            out.append({
                "model": s["model"], "weights": s["weights"], "embed": s["embed"],
                "setting": s["setting"], "claim": claim, "verdict": verdict,
                "criterion": "; ".join(c.criterion for c in checks)
                             + _criterion_suffix(criteria, claim),
                "statistic": decisive.statistic, "n": decisive.n, "estimate": decisive.estimate,
                "ci_low": decisive.ci_low, "ci_high": decisive.ci_high,
                "threshold": decisive.threshold,
                "reason": f"{decisive.statistic}: {decisive.reason}",
                "checks": json.dumps(json_safe([asdict(c) for c in checks]), ensure_ascii=False,
                                     allow_nan=False),
                "probe": s["probe"], "config_hash": config_hash, "params": s.get("params"),
                "n_pairs": decisive.n_pairs, "n_src": decisive.n_src, "n_tgt": decisive.n_tgt,
                "n_clusters": decisive.n_clusters, "method": decisive.method,
                "control_estimate": controlled.control_estimate if controlled else None,
                "control_source": controlled.control_source if controlled else None,
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
