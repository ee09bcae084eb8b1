"""Verdicts at a glance: the model × claim grid, short setting labels and the forest-plot points,
all views of the `claims` rows (analysis/claims.py; the named query `claims`). The report
(analysis/report/render.py, analysis/templates/glance.html.j2) and the dashboard's Models page draw them; nothing
here reads a run.

    grid = verdict_grid(claims)          # rows: model, weights, embed; sub-rows: probe settings
    points = forest_points(claims)       # one point per claim, check, model and setting

Short labels. A probe with one setting in the rows needs no label. A probe with several gets, per
setting, the fewest parameters that tell its settings apart (`preset=paper`, `steps=40`); where
that text is longer than `MAX_LABEL` characters, `s1`, `s2`, … instead. Either way `grid.legend`
holds every setting's full parameter text, which the report and the Models page show in a table
of their own and as a tooltip: no verdict table carries the long text.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from analysis.claims import CLAIMS

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_LABEL = 22
PREFERRED_KEYS = ("preset",)  # a key that names a bundle of parameters labels best
PROBE_ORDER = ("match", "perturb", "lipschitz", "equivalence")
# statistics that are ratios: their forest plots use a log axis
RATIO_STATISTICS = frozenset({"median_disp_over_pair", "median_over_random", "median_anisotropy",
                              "median_top_over_null_fd", "median_match_nonlinearity",
                              "median_walk_ratio"})
SHORT_STATISTIC = {"success_rate": "success", "median_psnr": "PSNR", "median_ssim": "SSIM",
                   "quant_rate": "8-bit", "median_disp_over_pair": "disp/pair",
                   "median_over_random": "opt/random", "median_anisotropy": "σ1/random",
                   "median_top_over_null_fd": "top/null", "median_match_nonlinearity": "match nonlin.",
                   "head_target_rate": "head→tgt", "knn_target_rate": "k-NN→tgt",
                   "zeroshot_target_rate": "zero-shot→tgt", "median_walk_ratio": "walk/random",
                   "linear_rate": "linear"}
UNITS = {"median_psnr": " dB"}
# "every verdict": the claims columns shown, the setting as its short label (the settings' table
# has every parameter)
SUMMARY_COLUMNS = ("model", "weights", "embed", "setting", "claim", "verdict", "n", "statistic",
                   "estimate", "ci_low", "ci_high", "threshold", "reason", "config_hash")
BADGES = {"supported": "✔ supported", "not_supported": "✘ not supported",
          "inconclusive": "? inconclusive"}
NORM_NAMES = {"linf": "L∞", "l2": "L2"}


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def number(value: Any, statistic: str = "") -> str:
    """An estimate as the grid writes it: rates as percentages, others to 3 significant digits."""
    if not _present(value):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if statistic.endswith("_rate"):
        return f"{100 * value:.1f}%"
    return f"{value:.3g}" + UNITS.get(statistic, "")


# ---------------------------------------------------------------- settings and their labels

def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _params(row: Mapping[str, Any]) -> dict[str, Any] | None:
    text = row.get("params")
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def full_text(row: Mapping[str, Any]) -> str:
    """Every (non-null) parameter of a claims row's setting, `k=v, …` (else its `setting`)."""
    params = _params(row)
    if params is None:
        return str(row.get("setting") or row.get("config_hash") or "")
    return ", ".join(f"{k}={_value_text(v)}" for k, v in sorted(params.items()) if v is not None) \
        or "(no parameters)"


def _distinguishing(settings: list[dict[str, Any]]) -> list[str]:
    """The fewest keys whose values tell `settings` apart (greedy; `preset`, then string-valued
    keys first, then the shorter text)."""
    keys = sorted({k for s in settings for k in s})
    varying = [k for k in keys if len({_value_text(s.get(k)) for s in settings}) > 1]
    chosen: list[str] = []

    def groups(with_keys: list[str]) -> int:
        return len({tuple(_value_text(s.get(k)) for k in with_keys) for s in settings})

    while varying and groups(chosen) < len(settings):
        def score(k: str) -> tuple[int, int, int, int]:
            strings = all(isinstance(s.get(k), str) for s in settings)
            width = max(len(f"{k}={_value_text(s.get(k))}") for s in settings)
            return (-groups([*chosen, k]), k not in PREFERRED_KEYS, 0 if strings else 1, width)
        best = min(varying, key=score)
        if groups([*chosen, best]) == groups(chosen):
            break
        chosen.append(best)
        varying.remove(best)
    return chosen


@dataclass
class Setting:
    """One probe setting (one parameter set; it may span several models' config_hash)."""

    probe: str
    label: str  # "" where its probe has one setting
    full: str  # every parameter
    models: list[str] = field(default_factory=list)
    config_hashes: list[str] = field(default_factory=list)


def settings_of(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Setting], list[Setting]]:
    """{config_hash: Setting} and the settings in order (probe, then first appearance)."""
    by_probe: dict[str, dict[str, Setting]] = {}
    params_of: dict[tuple[str, str], dict[str, Any]] = {}
    by_hash: dict[str, Setting] = {}
    for r in rows:
        probe = str(r.get("probe") or "")
        full = full_text(r)
        setting = by_probe.setdefault(probe, {}).get(full)
        if setting is None:
            setting = by_probe[probe][full] = Setting(probe, "", full)
            params_of[(probe, full)] = _params(r) or {"setting": full}
        if r["config_hash"] not in by_hash:
            by_hash[r["config_hash"]] = setting
            setting.config_hashes.append(r["config_hash"])
            if r["model"] not in setting.models:
                setting.models.append(r["model"])
    ordered: list[Setting] = []
    numbered = 0
    for probe in sorted(by_probe, key=lambda p: (p not in PROBE_ORDER, PROBE_ORDER.index(p)
                                                 if p in PROBE_ORDER else 0, p)):
        settings = list(by_probe[probe].values())
        ordered += settings
        if len(settings) < 2:
            continue
        dicts = [params_of[(probe, s.full)] for s in settings]
        keys = _distinguishing(dicts)
        labels = [", ".join(f"{k}={_value_text(d.get(k))}" for k in keys) for d in dicts]
        if not keys or max(map(len, labels)) > MAX_LABEL or len(set(labels)) < len(labels):
            labels = [f"s{numbered + i + 1}" for i in range(len(settings))]
            numbered += len(settings)
        for s, label in zip(settings, labels):
            s.label = label
    return by_hash, ordered


# ---------------------------------------------------------------- the grid

@dataclass
class Cell:
    claim: str
    verdict: str | None  # None: no verdict (no rows of its probe for this model)
    estimate: str = ""  # "PSNR 15.9 dB"
    label: str = ""  # the setting's short label ("" where its probe has one setting)
    title: str = ""  # the tooltip: full setting, interval, threshold, reason
    rowspan: int = 1

    @property
    def badge(self) -> str:
        return BADGES.get(self.verdict or "", "—")

    @property
    def markdown(self) -> str:
        if self.verdict is None:
            return "—"
        parts = [f"**{self.badge}**", self.estimate]
        if self.label:
            parts.append(f"`{self.label}`")
        return " ".join(p for p in parts if p)


@dataclass
class GridRow:
    model: str
    weights: str
    embed: str | None
    first: bool  # the group's first sub-row (carries the model cell)
    span: int  # sub-rows of the group
    cells: list[Cell | None]  # None: covered by a cell above (rowspan)

    @property
    def where(self) -> str:
        return f"{self.weights}" + (f" · {self.embed}" if self.embed else "")


@dataclass
class Grid:
    claims: list[str]
    rows: list[GridRow]
    legend: list[Setting]
    counts: dict[str, int]  # verdict -> number of claims rows

    @property
    def headers(self) -> list[str]:
        """Column headings: claims with spaces, the long one with a soft hyphen."""
        return [c.replace("_", " ").replace("overgeneralisation", "over\u00adgeneralisation")
                for c in self.claims]

    @property
    def labelled(self) -> list[Setting]:
        return [s for s in self.legend if s.label]

    @property
    def summary(self) -> str:
        total = sum(self.counts.values())
        parts = [f"{self.counts.get(v, 0)} {BADGES[v][2:]}" for v in BADGES if self.counts.get(v)]
        return f"{total} verdicts: " + ", ".join(parts) if total else "no verdicts"


def _cell(row: Mapping[str, Any], setting: Setting | None) -> Cell:
    statistic = str(row.get("statistic") or "")
    estimate = f"{SHORT_STATISTIC.get(statistic, statistic)} {number(row.get('estimate'), statistic)}"
    interval = (f"[{number(row.get('ci_low'), statistic)}, {number(row.get('ci_high'), statistic)}]"
                if _present(row.get("ci_low")) else "no interval")
    lines = [f"{row['claim']}: {BADGES.get(row['verdict'], row['verdict'])}",
             f"{statistic} = {number(row.get('estimate'), statistic)} {interval}, n = {row.get('n')}"]
    if _present(row.get("threshold")):
        lines.append(f"threshold ≥ {number(row.get('threshold'), statistic)}")
    if _present(row.get("control_estimate")):
        lines.append(f"negative control: {number(row.get('control_estimate'), statistic)}")
    if row.get("reason"):
        lines.append(str(row["reason"]))
    lines.append(f"{row.get('probe')} setting{' ' + setting.label if setting and setting.label else ''}: "
                 f"{setting.full if setting else row.get('setting')}")
    return Cell(row["claim"], row["verdict"], estimate, setting.label if setting else "",
                "\n".join(lines))


def _group_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(row["model"]), str(row["weights"]), str(row.get("embed") or "")


def verdict_grid(rows: Sequence[Mapping[str, Any]], claims: Sequence[str] = CLAIMS) -> Grid:
    """The grid of the claims rows: one row group per model, weights and embedding point, one
    column per claim (those in `claims` that have rows); sub-row k holds the k-th setting of each
    claim's probe; a claim whose probe has one setting for the model spans every sub-row."""
    rows = [r for r in rows if r.get("claim")]
    by_hash, legend = settings_of(rows)
    present = {r["claim"] for r in rows}
    columns = [c for c in claims if c in present] + sorted(present - set(claims))
    groups: dict[tuple[str, str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), {}).setdefault(r["claim"], []).append(r)
    out: list[GridRow] = []
    for key in sorted(groups):
        per_claim = groups[key]
        for part in per_claim.values():  # settings in the legend's order
            part.sort(key=lambda r: legend.index(by_hash[r["config_hash"]]))
        span = max(len(part) for part in per_claim.values())
        for k in range(span):
            cells: list[Cell | None] = []
            for claim in columns:
                part = per_claim.get(claim, [])
                if len(part) == 1 and k > 0:
                    cells.append(None)
                elif k < len(part):
                    cell = _cell(part[k], by_hash.get(part[k]["config_hash"]))
                    if len(part) == 1:
                        cell.rowspan = span
                    cells.append(cell)
                elif not part and k > 0:
                    cells.append(None)
                else:
                    cells.append(Cell(claim, None, rowspan=span if not part else 1,
                                      title="no rows of this claim's probe"))
            first = next(iter(per_claim.values()))[0]
            out.append(GridRow(key[0], str(first["weights"]), first.get("embed"), k == 0, span,
                               cells))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return Grid(columns, out, legend, counts)


def markdown_rows(grid: Grid) -> list[list[str]]:
    """The grid as Markdown table rows (no rowspan there: a spanning cell is repeated)."""
    out: list[list[str]] = []
    above: dict[int, Cell] = {}
    for row in grid.rows:
        cells = []
        for i, cell in enumerate(row.cells):
            if cell is not None:
                above[i] = cell
            shown = cell if cell is not None else above.get(i)
            cells.append(shown.markdown if shown is not None else "—")
        model = f"**{row.model}** ({row.where})" if row.first else "〃"
        out.append([model, *cells])
    return out


# ---------------------------------------------------------------- forest-plot points

def group_labels(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], str]:
    """A label per model, weights and embedding point: the model, with weights and embedding
    point only where they differ between the rows."""
    keys = sorted({_group_key(r) for r in rows})
    vary = [len({k[i] for k in keys}) > 1 for i in range(3)]
    return {k: " · ".join([k[0], *[k[i] for i in (1, 2) if vary[i] and k[i]]]) for k in keys}


def _checks(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    checks = row.get("checks")  # a list (claims_records) or its JSON text (the named query)
    if isinstance(checks, str):
        try:
            checks = json.loads(checks)
        except ValueError:
            checks = None
    if isinstance(checks, (list, tuple)) and checks:
        return [c for c in checks if isinstance(c, dict)]
    return [{k: row.get(k) for k in ("statistic", "n", "estimate", "ci_low", "ci_high", "threshold",
                                      "verdict", "norm")}]


def forest_points(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One point per claims row and check (a claim judged by several checks has a panel per
    check: `panel`), for the forest plots: `row` (model and short setting label), estimate,
    ci_low, ci_high, threshold, the check's verdict, the claim's verdict, `control` (the claims
    row's `control_estimate` on the check that decided the claim, where the rows have one) and
    `log` (the statistic is a ratio)."""
    rows = [r for r in rows if r.get("claim")]
    by_hash, _ = settings_of(rows)
    names = group_labels(rows)
    out = []
    for r in rows:
        setting = by_hash.get(r["config_hash"])
        label = names[_group_key(r)] + (f" · {setting.label}" if setting and setting.label else "")
        controlled = False  # the row's control_estimate goes to its decisive check (the first
        for check in _checks(r):  # check of the row's statistic)
            statistic = str(check.get("statistic") or r.get("statistic"))
            norm = check.get("norm")
            panel = statistic + (f" ({NORM_NAMES.get(norm, norm)})" if norm else "")
            control = check.get("control_estimate")
            if not _present(control) and not controlled and statistic == r.get("statistic"):
                control, controlled = r.get("control_estimate"), True
            out.append({
                "claim": r["claim"], "panel": panel, "statistic": statistic, "norm": norm,
                "row": label, "model": r["model"], "weights": r["weights"], "embed": r.get("embed"),
                "setting_label": setting.label if setting else "",
                "setting": setting.full if setting else str(r.get("setting") or ""),
                "config_hash": r["config_hash"], "n": check.get("n"),
                "estimate": _finite_or_none(check.get("estimate")),
                "estimate_text": number(check.get("estimate"), statistic),
                "ci_low": _finite_or_none(check.get("ci_low")),
                "ci_high": _finite_or_none(check.get("ci_high")),
                "threshold": _finite_or_none(check.get("threshold")),
                "verdict": check.get("verdict") or r["verdict"], "claim_verdict": r["verdict"],
                "control": _finite_or_none(control) if _present(control) else None,
                "log": statistic in RATIO_STATISTICS,
            })
    return out


def _finite_or_none(value: Any) -> float | None:
    if not _present(value):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- tables beside the grid

DETAIL_COLUMNS = ("model", "weights", "embed", "setting", "claim", "verdict", "n", "estimate",
                  "95% interval", "threshold", "decided by")


def detail_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): every verdict with what decided it (DETAIL_COLUMNS, less weights and
    embed where every row has the same), the setting as its short label."""
    table = detail_rows(rows)
    keep = [i for i, c in enumerate(DETAIL_COLUMNS)
            if c not in ("weights", "embed") or len({r[i] for r in table}) > 1]
    return [DETAIL_COLUMNS[i] for i in keep], [[r[i] for i in keep] for r in table]


def detail_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Every verdict with what decided it, the setting as its short label (DETAIL_COLUMNS)."""
    rows = [r for r in rows if r.get("claim")]
    by_hash, _ = settings_of(rows)
    out = []
    for r in rows:
        statistic = str(r.get("statistic") or "")
        setting = by_hash.get(r["config_hash"])
        interval = (f"{number(r.get('ci_low'), statistic)}–{number(r.get('ci_high'), statistic)}"
                    if _present(r.get("ci_low")) else "n/a")
        out.append([str(r["model"]), str(r["weights"]), str(r.get("embed") or ""),
                    (setting.label if setting and setting.label else "—"), str(r["claim"]),
                    BADGES.get(r["verdict"], r["verdict"]),
                    f"{int(r['n']):,}" if _present(r.get("n")) else "n/a",
                    f"{statistic} = {number(r.get('estimate'), statistic)}", interval,
                    number(r.get("threshold"), statistic) if _present(r.get("threshold")) else "",
                    str(r.get("reason") or "")])
    return out


SETTING_COLUMNS = ("label", "probe", "models", "parameters")


def setting_rows(grid: Grid) -> list[list[str]]:
    """The settings' legend (SETTING_COLUMNS): label ("—" where its probe has one setting),
    probe, models, every parameter."""
    return [[s.label or "—", s.probe, ", ".join(s.models), s.full] for s in grid.legend]


@functools.lru_cache(maxsize=1)
def _grid_template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template("glance.html.j2")


def grid_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The verdict grid of claims rows as an HTML fragment with its own CSS
    (analysis/templates/glance.html.j2; the dashboard's Models page shows it with st.html)."""
    return _grid_template().render(grid=verdict_grid(rows))
