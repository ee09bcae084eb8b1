"""The report's numbers and structure: what the runs say, read once for every section (the
claim queries, histogram bins and box summaries computed in DuckDB from the statements in
analysis/queries/report/), and the dataclasses the sentences fill and the templates draw."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from analysis.db import ReadStats
from analysis.named import run_named, statement

if TYPE_CHECKING:
    from analysis.report.gallery import Triple

CLAIM_QUERIES = ("equivalence", "invisibility", "normal_space", "lipschitz", "lipschitz_families",
                 "overgeneralisation", "geometry")


# ---------------------------------------------------------------- number formatting

def fmt(value: Any, kind: str = "num") -> str:
    """How the report writes a number: kind is num (3 significant digits), pct, int, x (ratio)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "int":
        return f"{int(value):,}"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "x":
        return f"{float(value):.3g}×"
    if 1e3 <= abs(float(value)) < 1e7:  # 12,000 steps, not 1.2e+04
        return f"{float(value):,.0f}"
    return f"{float(value):.3g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


def _plain_value(value: Any) -> Any:
    """One DataFrame cell as a plain Python value; NaN, NaT and pd.NA become None."""
    if isinstance(value, (bytes, bytearray, memoryview, list, tuple, dict, np.ndarray)):
        return value
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts of plain Python values."""
    return [{k: _plain_value(v) for k, v in rec.items()} for rec in df.to_dict("records")]


# ---------------------------------------------------------------- report structure

@dataclass
class Figure:
    title: str
    png: bytes
    filename: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Claim:
    key: str
    title: str
    sentences: list[str] = field(default_factory=list)
    table: Table | None = None
    figures: list[Figure] = field(default_factory=list)
    empty: str | None = None  # set when there is no data for this claim
    setting: str | None = None  # the probe setting these numbers are for (None: no data)
    config_hash: str | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # rows of the claims table

    @property
    def verdict_table(self) -> Table | None:
        return _verdict_table(self.verdicts)

    @property
    def badges(self) -> list[tuple[str, str]]:
        """(claim, verdict) beside the claim's heading."""
        return [(v["claim"], v["verdict"]) for v in self.verdicts]


@dataclass
class GalleryRow:
    triple: Triple
    files: dict[str, str]  # src/adv/tgt/diff -> filename

    def uri(self, which: str) -> str:
        data = getattr(self.triple, f"{which}_png")
        return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class GalleryBlock:
    """The gallery of one match setting."""

    setting: str | None
    config_hash: str | None
    rows: list[GalleryRow]


@dataclass
class Section:
    model: str
    weights: str
    embed: str | None
    anchor: str
    claims: list[Claim]
    gallery: list[GalleryBlock]
    numbers: dict[str, Any]
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # this section's claims rows

    @property
    def label(self) -> str:
        return f"{self.model} ({self.weights}, {self.embed})" if self.embed else \
            f"{self.model} ({self.weights})"


@dataclass
class Report:
    title: str
    generated_at: str
    runs: list[dict[str, Any]]
    overview: Table | None
    failures: Table | None
    n_failures: int
    sections: list[Section]
    claims: list[dict[str, Any]] = field(default_factory=list)  # the claims table (every section)
    criteria: dict[str, Any] = field(default_factory=dict)
    criteria_source: str = ""
    transfer: Any = None  # analysis.report.transfer.TransferSection (issue 23), None without transfer rows
    # lines the report opens with, before anything else (e.g. the random-init weights caveat)
    caveats: list[str] = field(default_factory=list)

    @property
    def verdict_table(self) -> Table | None:
        """Every verdict of the report at a glance (one row per model, setting and claim)."""
        return _verdict_table(self.claims, overview=True)

    @property
    def criteria_lines(self) -> list[str]:
        """The criteria as `claim.key: value` lines."""
        lines = []
        for key, value in self.criteria.items():
            if isinstance(value, dict):
                lines += [f"{key}.{k}: {v}" for k, v in value.items() if v is not None]
            else:
                lines.append(f"{key}: {value}")
        return lines
    read: ReadStats | None = None  # what the report read, and how long building it took

    @property
    def read_text(self) -> str:
        return self.read.text() if self.read else ""


# ---------------------------------------------------------------- groups and settings

Group = tuple[str, str, "str | None"]  # model, weights, embed


def _for(rows: list[dict[str, Any]], group: Group) -> list[dict[str, Any]]:
    model, weights, embed = group
    return [r for r in rows
            if r["model"] == model and r["weights"] == weights and r.get("embed") == embed]


def _by_setting(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by config_hash, in the queries' order (model, weights, embed, setting)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["config_hash"], []).append(r)
    return out


def _one(rows: list[dict[str, Any]], config_hash: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["config_hash"] == config_hash), None)


def _slug_cfg(config_hash: str) -> str:
    return _slug(config_hash)


# ---------------------------------------------------------------- verdicts (analysis/claims.py)

VerdictRows = dict[tuple[str, str], dict[str, Any]]  # (config_hash, claim) -> claims-table row
_VERDICT_WORDS = {"supported": "supported", "not_supported": "not supported",
                  "inconclusive": "inconclusive"}


def _interval(v: dict[str, Any], kind: str = "num") -> str:
    if v.get("ci_low") is None:
        return "n/a"
    return f"{fmt(v['ci_low'], kind)}–{fmt(v['ci_high'], kind)}"


def _verdict_table(verdicts: list[dict[str, Any]], overview: bool = False) -> Table | None:
    """The verdicts with what decided them; `overview`: with model and setting, for the
    report's summary (a claim's own table has neither: its heading says them)."""
    if not verdicts:
        return None
    rows = []
    for v in verdicts:
        kind = "pct" if v["statistic"].endswith("_rate") else "num"
        where = [v["model"], v["weights"], v["embed"] or "", v["setting"] or v["config_hash"]] \
            if overview else []
        rows.append([*where, v["claim"], _VERDICT_WORDS[v["verdict"]],
                     *([] if overview else [v["criterion"]]), fmt(v["n"], "int"),
                     f"{v['statistic']} = {fmt(v['estimate'], kind)}", _interval(v, kind),
                     v["reason"]])
    columns = ["claim", "verdict", *([] if overview else ["criterion"]), "n", "estimate",
               "95% interval", "decided by"]
    return Table([*(["model", "weights", "embed", "setting"] if overview else []), *columns], rows)


@dataclass
class _Data:
    """Everything the sections draw, each read once for every group (one scan per question,
    not one per model and setting): query rows, and figure inputs aggregated in DuckDB."""

    results: dict[str, list[dict[str, Any]]]
    match_hists: dict[str, dict[str, Any]]
    lipschitz_boxes: dict[str, pd.DataFrame]
    lipschitz_points: dict[str, pd.DataFrame]
    nonlinearity: pd.DataFrame
    gallery: list[dict[str, Any]]
    geometry_curves: dict[str, pd.DataFrame]  # config_hash -> percentiles per curve and point


# Histogram bins as numpy's histogram_bin_edges draws them: `bins` equal widths between the

# The figures' inputs (analysis/queries/report/*.sql): histogram bins as numpy's
# histogram_bin_edges draws them, and box-plot summaries with a sample of directions.
_MATCH_REL = statement("report/match_rel_histogram")
_MATCH_PSNR = statement("report/match_psnr_histogram")
_LIP_BOXES_SQL = statement("report/lipschitz_boxes")
_LIP_POINTS_SQL = statement("report/lipschitz_points")
_GEOMETRY_CURVES_SQL = statement("report/equivalence_curves")


def _df(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    cur = con.cursor()
    try:
        return cur.sql(sql).df()
    finally:
        cur.close()


def _histograms(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, dict[str, Any]]:
    """{config_hash: {part: (edges, counts)}} of one histogram statement."""
    df = _df(con, sql)
    out: dict[str, dict[str, Any]] = {}
    for (cfg, part), rows in df.groupby(["config_hash", "part"], sort=False):
        lo, width, bins = float(rows["lo"].iloc[0]), float(rows["width"].iloc[0]), int(rows["bins"].iloc[0])
        counts = np.zeros(bins, dtype=np.int64)
        counts[rows["b"].to_numpy(dtype=int)] = rows["n"].to_numpy()
        out.setdefault(cfg, {})[part] = (lo + width * np.arange(bins + 1), counts)
    return out


def _read_data(con: duckdb.DuckDBPyConnection, gallery_limit: int) -> _Data:
    results = {name: _records(run_named(con, name, {})) for name in CLAIM_QUERIES}
    rel, psnr = _histograms(con, _MATCH_REL), _histograms(con, _MATCH_PSNR)
    hists: dict[str, dict[str, Any]] = {}
    for cfg in set(rel) | set(psnr):
        rel_parts = rel.get(cfg, {})
        # both success groups share the edges of all rows (one query computed them per setting)
        hists[cfg] = {**rel_parts, **psnr.get(cfg, {})}
    boxes = _df(con, _LIP_BOXES_SQL)
    points = _df(con, _LIP_POINTS_SQL)
    gallery = _records(run_named(con, "gallery", {"limit": str(gallery_limit)})) if gallery_limit else []
    curves = _df(con, _GEOMETRY_CURVES_SQL)
    return _Data(results, hists,
                 {cfg: part for cfg, part in boxes.groupby("config_hash")},
                 {cfg: part for cfg, part in points.groupby("config_hash")},
                 run_named(con, "nonlinearity", {}), gallery,
                 {cfg: part for cfg, part in curves.groupby("config_hash")})


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> Table | None:
    if not rows:
        return None
    return Table(list(columns), [[("" if r.get(c) is None else
                                   fmt(r[c]) if isinstance(r.get(c), float) else str(r[c]))
                                  for c in columns] for r in rows])
