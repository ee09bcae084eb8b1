"""The findings report: the paper's four claims, per model, weights and embedding point, with
numbers from the named queries, plots and a gallery of matched triples, and a verdict on every
claim (analysis/claims.py: supported, not_supported or inconclusive under stated criteria).

A probe run with several settings (several `config_hash` values: e.g. match presets paper and
default, several lr) is never pooled: each claim is stated once per setting of its probe (its
own sentences, table and plots, headed by the setting's parameters), and the gallery has one
block per match setting.

    paths = write_report(["runs/demo"], "report/")   # report/report.html, report/report.md, PNGs

`report.html` is self-contained (images as base64 data URIs, inline CSS, no JavaScript);
`report.md` references the PNG files written next to it; `report.json` holds the exact query
rows every stated number comes from (per section, each query's rows: one per setting), the
criteria and the `claims` list (the named query `claims`). A claim with no data says so plainly.
Every sentence about a claim is conditioned on its verdict or only states numbers: nothing says
the matched images look like their sources unless the invisibility verdict is `supported`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import numpy as np
import pandas as pd

from analysis import figures
from analysis.claims import NOT_SUPPORTED, SUPPORTED, Criteria, claims_records, load_criteria
from analysis.db import ReadStats, open_runs, read_manifest, read_progress, read_stats, snapshot_estimates
from analysis.gallery import Triple, make_triple
from analysis.named import run_named, run_named_arrow

TEMPLATES = Path(__file__).with_name("templates")
CLAIM_QUERIES = ("equivalence", "invisibility", "normal_space", "lipschitz", "lipschitz_families",
                 "overgeneralisation")


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


# ---------------------------------------------------------------- claims

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


_NO_DATA = "for this model, weights and embedding point"


# ---------------------------------------------------------------- verdicts (analysis/claims.py)

VerdictRows = dict[tuple[str, str], dict[str, Any]]  # (config_hash, claim) -> claims-table row
_VERDICT_WORDS = {"supported": "supported", "not_supported": "not supported",
                  "inconclusive": "inconclusive"}


def _claim_verdicts(con: duckdb.DuckDBPyConnection, criteria: Criteria) -> list[dict[str, Any]]:
    """The claims table under `criteria` (the named query `claims`' rows, checks parsed)."""
    return claims_records(con, criteria)


def _verdict_of(verdicts: VerdictRows, config_hash: str | None, claim: str) -> dict[str, Any] | None:
    return verdicts.get((config_hash, claim)) if config_hash else None


def _interval(v: dict[str, Any], kind: str = "num") -> str:
    if v.get("ci_low") is None:
        return "n/a"
    return f"{fmt(v['ci_low'], kind)}–{fmt(v['ci_high'], kind)}"


def _verdict_sentence(label: str, v: dict[str, Any] | None) -> str:
    """One sentence stating a claim's verdict, its criterion and what decided it."""
    if v is None:
        return f"No verdict on {label}: its rows are missing from the claims table."
    word = _VERDICT_WORDS[v["verdict"]]
    return f"Verdict on {label}: {word} ({v['reason']}). Criterion: {v['criterion']}."


def _failing(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in v["checks"] if c["verdict"] == NOT_SUPPORTED]


def _invisibility_sentence(v: dict[str, Any] | None) -> str:
    """What the invisibility verdict lets the report say about how the matched images look."""
    if v is None:
        return "No invisibility verdict: nothing is said about how the matched images look."
    if v["verdict"] == SUPPORTED:
        return ("By the invisibility criterion the matched images pass as their sources "
                "(every check's interval clears its threshold).")
    if v["verdict"] == NOT_SUPPORTED:
        fails = "; ".join(f"{c['criterion']}: estimate {fmt(c['estimate'])}, 95% interval "
                          f"{fmt(c['ci_low'])}–{fmt(c['ci_high'])}" for c in _failing(v))
        return f"The matched images fail the invisibility criterion: {fails}."
    return (f"The invisibility criterion does not decide how the matched images look here "
            f"({v['reason']}).")


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


# ---------------------------------------------------------------- claims

def _claim_equivalence(eq: dict | None, inv: dict | None, fig: bytes | None, slug: str,
                       verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("equivalence", "1. Equivalence: does a different image reach the same embedding?")
    if not eq or not eq["n_ok"]:
        claim.empty = f"No match rows (status ok) {_NO_DATA}: claim 1 not measured."
        return claim
    verdicts = verdicts or {}
    v_eq = _verdict_of(verdicts, eq["config_hash"], "equivalence")
    v_inv = _verdict_of(verdicts, eq["config_hash"], "invisibility")
    claim.verdicts = [v for v in (v_eq, v_inv) if v is not None]
    claim.sentences.append(
        f"{fmt(eq['n_success'], 'int')} of {fmt(eq['n_ok'], 'int')} matches reached the target's "
        f"embedding ({fmt(eq['success_rate'], 'pct')} success rate), in a median of "
        f"{fmt(eq['median_steps_success'])} steps for those that did. The final rel_dist has median "
        f"{fmt(eq['median_rel_dist'])} (source vs target at the start: "
        f"{fmt(eq['median_rel_dist_start'])}) and the final cosine median {fmt(eq['median_cos'])}."
    )
    claim.sentences.append(_verdict_sentence("equivalence", v_eq))
    if inv and inv["n_success"]:
        claim.sentences.append(
            f"Pixel change of the successful matches against their sources: median PSNR "
            f"{fmt(inv['median_psnr'])} dB (lowest {fmt(inv['min_psnr'])} dB), median SSIM "
            f"{fmt(inv['median_ssim'])}, median largest pixel change "
            f"{fmt(inv['median_pix_linf_255'])}/255. {fmt(inv['quant_success_rate'], 'pct')} of the "
            f"successful matches still succeed after rounding to 8-bit pixels."
        )
    else:
        claim.sentences.append("No match succeeded, so there are no pixel-change numbers.")
    claim.sentences.append(_invisibility_sentence(v_inv))
    if eq["n_error"]:
        rows = "row" if eq["n_error"] == 1 else "rows"
        claim.sentences.append(f"{fmt(eq['n_error'], 'int')} match {rows} ended in an error and "
                               f"{'is' if eq['n_error'] == 1 else 'are'} left out of every number.")
    if fig:
        claim.figures.append(Figure("Final rel_dist and PSNR of successful matches", fig,
                                    f"fig-{slug}-match.png"))
    return claim


_NORM_NAMES = {"l2": "L2", "linf": "L∞"}


def _eps_label(norm: str, eps: float) -> str:
    return f"{eps * 255:.3g}/255" if norm == "linf" else fmt(eps)


def _claim_normal(rows: list[dict], fig: bytes | None, slug: str,
                  verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("normal_space", "2. Normal spaces: do invisible changes move the embedding far?")
    if not rows:
        claim.empty = f"No perturb rows (status ok) {_NO_DATA}: claim 2 not measured."
        return claim
    v = _verdict_of(verdicts or {}, rows[0]["config_hash"], "normal_space")
    claim.verdicts = [v] if v is not None else []
    for norm in sorted({r["norm"] for r in rows}):
        top = max((r for r in rows if r["norm"] == norm), key=lambda r: r["eps"])
        claim.sentences.append(
            f"An {_NORM_NAMES.get(norm, norm)} change of at most ε = {_eps_label(norm, top['eps'])} moves the embedding by a "
            f"median {fmt(top['median_disp_over_pair'])} times the source-target distance; a random "
            f"change of the same size moves it {fmt(top['median_random_disp_over_pair'])} times "
            f"(median ratio {fmt(top['median_over_random'], 'x')})."
        )
    claim.sentences.append(_verdict_sentence("normal spaces", v))
    claim.table = Table(
        ["norm", "ε", "pairs", "disp / pair dist (median)", "10–90%", "random δ", "optimised / random",
         "label changed"],
        [[r["norm"], _eps_label(r["norm"], r["eps"]), fmt(r["n"], "int"),
          fmt(r["median_disp_over_pair"]),
          f"{fmt(r['p10_disp_over_pair'])}–{fmt(r['p90_disp_over_pair'])}",
          fmt(r["median_random_disp_over_pair"]), fmt(r["median_over_random"], "x"),
          fmt(r["label_change_rate"], "pct")] for r in rows],
    )
    if fig:
        claim.figures.append(Figure("Displacement over the pair distance against ε, with the "
                                    "random baseline", fig, f"fig-{slug}-eps.png"))
    return claim


def _top_null_sentence(ratio: float | None) -> str:
    """The top-versus-null comparison, worded by what the ratio shows."""
    if ratio is None:
        return ("No pair has both top singular directions and null-space directions (family "
                "`null`), so the two are not compared.")
    if ratio > 1:
        return (f"Along top singular directions the estimate exceeds the one along null-space "
                f"directions (family `null`: the Jacobian's whole row space projected out) by a median "
                f"{fmt(ratio, 'x')} per pair.")
    return (f"Along top singular directions the estimate does not exceed the one along "
            f"null-space directions (family `null`): median ratio {fmt(ratio, 'x')} per pair.")


def _claim_lipschitz(lip: dict | None, families: list[dict], figs: list[tuple[str, bytes | None]],
                     slug: str, verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("lipschitz", "3. Lipschitz evidence: flat along the null space, steep along top directions?")
    if not lip or not lip["n_pairs"]:
        claim.empty = f"No lipschitz rows (status ok) {_NO_DATA}: claim 3 not measured."
        return claim
    v = _verdict_of(verdicts or {}, lip["config_hash"], "lipschitz")
    claim.verdicts = [v] if v is not None else []
    claim.sentences.append(
        f"Over {fmt(lip['n_pairs'], 'int')} pairs, σ1 (the largest singular value of the Jacobian) "
        f"is a median {fmt(lip['median_sigma1_over_random'], 'x')} the median estimate along random "
        f"directions (geometric mean {fmt(lip['geomean_sigma1_over_random'], 'x')}, range "
        f"{fmt(lip['min_sigma1_over_random'], 'x')} to {fmt(lip['max_sigma1_over_random'], 'x')})."
    )
    claim.sentences.append(_top_null_sentence(lip.get("median_top_over_null")))
    if lip.get("median_grad_over_random") is not None:
        claim.sentences.append(
            f"Along the first matching step (the negative gradient of the matching loss, grad), the "
            f"estimate is a median {fmt(lip['median_grad_over_random'], 'x')} the random one."
        )
    if lip.get("median_match_over_random") is not None:
        claim.sentences.append(
            f"Along the direction a successful match moved the source (match), the estimate is a median "
            f"{fmt(lip['median_match_over_random'], 'x')} the random one."
        )
    claim.sentences.append(_verdict_sentence("Lipschitz evidence", v))
    claim.table = Table(
        ["family", "directions", "min", "25%", "median", "75%", "max"],
        [[f["family"], fmt(f["n_directions"], "int"), fmt(f["min_estimate"]), fmt(f["p25_estimate"]),
          fmt(f["median_estimate"]), fmt(f["p75_estimate"]), fmt(f["max_estimate"])]
         for f in families],
    )
    for (title, png), name in zip(figs, ("families", "nonlinearity")):
        if png:
            claim.figures.append(Figure(title, png, f"fig-{slug}-lipschitz-{name}.png"))
    return claim


def _labeller_sentence(og: dict[str, Any], labeller: str, name: str) -> str:
    labelled, same = og[f"n_{labeller}_labelled_success"], og.get(f"n_{labeller}_same_label_success")
    left_out = (f" {fmt(same, 'int')} successful {'match' if same == 1 else 'matches'} whose "
                f"source and target {name} labels alike {'is' if same == 1 else 'are'} left out."
                if same else "")
    if not labelled:
        return f"No {name} labels on successful matches with different source and target labels.{left_out}"
    return (f"Of the {fmt(labelled, 'int')} successful matches whose source and target {name} "
            f"labels differently, {fmt(og[f'{labeller}_target_rate_success'], 'pct')} are labelled "
            f"as the target and {fmt(og[f'{labeller}_source_rate_success'], 'pct')} keep the "
            f"source's label ({fmt(og[f'{labeller}_target_rate_all'], 'pct')} as the target among "
            f"all such ok matches).{left_out}")


def _claim_overgeneralisation(og: dict | None, verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("overgeneralisation", "4. Overgeneralisation: do labels follow the embedding?")
    if not og or not og["n_ok"]:
        claim.empty = f"No match rows (status ok) {_NO_DATA}: claim 4 not measured."
        return claim
    v = _verdict_of(verdicts or {}, og["config_hash"], "overgeneralisation")
    claim.verdicts = [v] if v is not None else []
    claim.sentences.append(_labeller_sentence(og, "head", "the classifier head"))
    claim.sentences.append(_labeller_sentence(og, "knn", "k-NN"))
    claim.sentences.append(_verdict_sentence("overgeneralisation", v))
    return claim


# ---------------------------------------------------------------- assembling

def _with_setting(claim: Claim, row: dict[str, Any] | None) -> Claim:
    if row is not None:
        claim.setting = row.get("setting") or row["config_hash"]
        claim.config_hash = row["config_hash"]
    return claim


def _named(row: dict[str, Any], column: str) -> str:
    """A label index with its class name where the run knows it: `277 (red fox, Vulpes vulpes)`."""
    name = row.get(f"{column}_name")
    return f"{row.get(column)} ({name})" if name else str(row.get(column))


def _gallery(gallery_rows: list[dict[str, Any]], group: Group, slug: str) -> list[GalleryBlock]:
    """The gallery blocks of one group, from the rows of one `gallery` query over every group
    (its limit applies per model, weights, embedding point and setting)."""
    rows = _for(gallery_rows, group)
    blocks = []
    for config_hash, part in _by_setting(rows).items():
        out = []
        for k, r in enumerate(part):
            parts = [f"pair {r['pair_id']}"]
            if r.get("src_key") or r.get("tgt_key"):
                parts.append(f"{r.get('src_key')} → {r.get('tgt_key')}")
            if r.get("rel_dist") is not None:
                parts.append(f"rel_dist {fmt(r['rel_dist'])}")
            if r.get("psnr") is not None:
                parts.append(f"PSNR {fmt(r['psnr'])} dB")
            if r.get("pred_adv") is not None:
                parts.append(f"head: source {_named(r, 'pred_src')}, target {_named(r, 'pred_tgt')}, "
                             f"matched {_named(r, 'pred_adv')}")
            if r.get("variant"):
                parts.append(str(r["variant"]))
            triple = make_triple(str(r["pair_id"]), "; ".join(parts), r["src_png"], r["adv_png"],
                                 r["tgt_png"])
            cfg = _slug_cfg(config_hash) if config_hash else "x"
            files = {w: f"gallery-{slug}-{cfg}-{k}-{w}.png" for w in ("src", "adv", "tgt", "diff")}
            out.append(GalleryRow(triple, files))
        blocks.append(GalleryBlock(part[0].get("setting"), config_hash, out))
    return blocks


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


# Histogram bins as numpy's histogram_bin_edges draws them: `bins` equal widths between the
# finite minimum and maximum of each setting (a range of 1 around a single value).
_HIST_SQL = """
WITH v AS ({source}),
r AS (
    SELECT config_hash, count(*) AS n, min(x) AS lo, max(x) AS hi,
           least(30, greatest(5, count(*)))::INTEGER AS bins
    FROM v GROUP BY config_hash
),
e AS (
    SELECT config_hash, n, bins,
           CASE WHEN hi > lo THEN lo ELSE lo - 0.5 END AS lo,
           CASE WHEN hi > lo THEN (hi - lo) / bins ELSE 1.0 / bins END AS width
    FROM r
)
SELECT v.config_hash, v.part, e.lo, e.width, e.bins,
       least(CAST(floor((v.x - e.lo) / e.width) AS INTEGER), e.bins - 1) AS b, count(*) AS n
FROM v JOIN e USING (config_hash)
GROUP BY ALL ORDER BY v.config_hash, v.part, b
"""
_MATCH_REL = ("SELECT config_hash, CASE WHEN coalesce(success, false) THEN 'success' "
              "ELSE 'no success' END AS part, rel_dist AS x "
              "FROM match_ok(NULL, NULL, NULL, NULL) WHERE isfinite(rel_dist)")
_MATCH_PSNR = ("SELECT config_hash, 'psnr' AS part, psnr AS x FROM match_ok(NULL, NULL, NULL, NULL) "
               "WHERE success AND isfinite(psnr)")
# Box-plot summary and a deterministic sample of at most 200 directions per family and setting.
_LIP_BOXES_SQL = """
SELECT config_hash, family, count(*) AS n,
       quantile_cont(estimate, 0.05) AS p05, quantile_cont(estimate, 0.25) AS q1,
       quantile_cont(estimate, 0.5) AS median, quantile_cont(estimate, 0.75) AS q3,
       quantile_cont(estimate, 0.95) AS p95
FROM lipschitz_estimates(NULL, NULL, NULL, NULL)
WHERE estimate > 0 AND isfinite(estimate)
GROUP BY config_hash, family ORDER BY config_hash, family
"""
_LIP_POINTS_SQL = """
SELECT config_hash, family, estimate FROM (
    SELECT config_hash, family, estimate,
           row_number() OVER (PARTITION BY config_hash, family
                              ORDER BY hash(run_id, unit_id, pair_id, direction)) AS k
    FROM lipschitz_estimates(NULL, NULL, NULL, NULL)
    WHERE estimate > 0 AND isfinite(estimate)
) WHERE k <= 200 ORDER BY config_hash, family, k
"""


def _df(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    cur = con.cursor()
    try:
        return cur.sql(sql).df()
    finally:
        cur.close()


def _histograms(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, dict[str, Any]]:
    """{config_hash: {part: (edges, counts)}} of one histogram SQL source."""
    df = _df(con, _HIST_SQL.format(source=source))
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
    return _Data(results, hists,
                 {cfg: part for cfg, part in boxes.groupby("config_hash")},
                 {cfg: part for cfg, part in points.groupby("config_hash")},
                 run_named(con, "nonlinearity", {}), gallery)


def _section(data: _Data, group: Group, claim_rows: Sequence[dict[str, Any]] = ()) -> Section:
    model, weights, embed = group
    slug = _slug("-".join(x for x in (model, weights, embed) if x))
    results = data.results
    rows = {name: _for(results[name], group) for name in CLAIM_QUERIES}
    own_verdicts = _for(list(claim_rows), group)
    verdicts: VerdictRows = {(v["config_hash"], v["claim"]): v for v in own_verdicts}

    claims: list[Claim] = []
    # 1. equivalence, one claim per match setting
    for cfg, part in _by_setting(rows["equivalence"]).items():
        eq = part[0]
        fig = figures.match_distributions(data.match_hists.get(cfg, {})) if eq["n_ok"] else None
        claim = _claim_equivalence(eq, _one(rows["invisibility"], cfg), fig,
                                   f"{slug}-{_slug_cfg(cfg)}", verdicts)
        claims.append(_with_setting(claim, eq))
    if not rows["equivalence"]:
        claims.append(_claim_equivalence(None, None, None, slug))
    # 2. normal space, one claim per perturb setting
    for cfg, normal in _by_setting(rows["normal_space"]).items():
        fig = figures.eps_curves(pd.DataFrame(normal))
        claims.append(_with_setting(
            _claim_normal(normal, fig, f"{slug}-{_slug_cfg(cfg)}", verdicts), normal[0]))
    if not rows["normal_space"]:
        claims.append(_claim_normal([], None, slug))
    # 3. Lipschitz, one claim per lipschitz setting
    nonlin = data.nonlinearity
    for cfg, part in _by_setting(rows["lipschitz"]).items():
        lip = part[0]
        empty = pd.DataFrame()
        lip_figs = [
            (("Directional Lipschitz estimates by direction family (log axis; box: quartiles, "
              "whiskers: 5th to 95th percentile, dots: up to 200 directions per family)"),
             figures.lipschitz_families(data.lipschitz_boxes.get(cfg, empty),
                                        data.lipschitz_points.get(cfg, empty))),
            ("Nonlinearity against the step size h",
             figures.nonlinearity_curves(nonlin[nonlin["config_hash"] == cfg] if len(nonlin) else nonlin)),
        ]
        families = [f for f in rows["lipschitz_families"] if f["config_hash"] == cfg]
        claims.append(_with_setting(
            _claim_lipschitz(lip, families, lip_figs, f"{slug}-{_slug_cfg(cfg)}", verdicts), lip))
    if not rows["lipschitz"]:
        claims.append(_claim_lipschitz(None, [], [], slug))
    # 4. overgeneralisation, one claim per match setting
    for og in rows["overgeneralisation"]:
        claims.append(_with_setting(_claim_overgeneralisation(og, verdicts), og))
    if not rows["overgeneralisation"]:
        claims.append(_claim_overgeneralisation(None))

    return Section(model, weights, embed, slug, claims, _gallery(data.gallery, group, slug), rows,
                   own_verdicts)


def _group_key(group: Group) -> tuple[str, str, str]:
    return group[0], group[1], group[2] or ""


def _run_info(run_dir: Path | str) -> dict[str, Any]:
    progress = read_progress(run_dir) or {}
    manifest = read_manifest(run_dir) or {}
    return {
        "path": str(run_dir),
        "run_id": manifest.get("run_id") or progress.get("run_id") or str(run_dir).rstrip("/").rsplit("/", 1)[-1],
        "state": progress.get("state", "unknown"),
        "units": f"{progress.get('units_done', '?')} of {progress.get('units_total', '?')} done, "
                 f"{progress.get('units_failed', 0)} failed" if progress else "no progress.json",
        "started_at": manifest.get("started_at") or progress.get("started_at") or "",
        "finished_at": manifest.get("finished_at") or "",
        "git_commit": manifest.get("git_commit") or "",
        "versions": ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items()),
    }


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> Table | None:
    if not rows:
        return None
    return Table(list(columns), [[("" if r.get(c) is None else
                                   fmt(r[c]) if isinstance(r.get(c), float) else str(r[c]))
                                  for c in columns] for r in rows])


def build_report(run_dirs: Sequence[str | Path], *, gallery_limit: int = 6,
                 max_failures: int = 25, criteria: Criteria | None = None,
                 criteria_source: str | None = None) -> Report:
    """Query the runs and assemble the report (no file written). `criteria`: the verdicts'
    criteria (default: analysis/criteria.yaml); `criteria_source` names where they came from.
    `report.read` says how many units, files and rows the runs hold and how long reading them
    for the report took."""
    criteria = criteria or load_criteria()
    start = time.perf_counter()
    con = open_runs(run_dirs, snapshot=True)  # many questions of the files as they are now
    try:
        snapshot_estimates(con)  # several questions start from every Lipschitz estimate
        data = _read_data(con, gallery_limit)
        results = data.results
        claim_rows = _claim_verdicts(con, criteria)
        groups = sorted({(r["model"], r["weights"], r.get("embed")) for name in CLAIM_QUERIES
                         for r in results[name] if r["model"] is not None}, key=_group_key)
        sections = [_section(data, g, claim_rows) for g in groups]
        overview = _records(run_named(con, "overview", {}))
        failures_table = run_named_arrow(con, "failures", {})
        failures = _records(failures_table.slice(0, max_failures).to_pandas())
        n_failures = failures_table.num_rows
        stats = read_stats(con, run_dirs)
    finally:
        con.close()
    read = ReadStats(stats.units, stats.files, stats.rows, time.perf_counter() - start,
                     stats.rows_by_table)
    runs = [_run_info(d if "://" in str(d) else Path(d)) for d in run_dirs]  # keep s3://… URIs whole
    return Report(
        title="vitsweep findings: " + ", ".join(r["run_id"] for r in runs),
        generated_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=runs,
        overview=_table(overview, ["model", "weights", "embed", "probe", "setting", "units",
                                   "units_ok", "units_error", "units_in_progress", "pairs_ok",
                                   "pairs_error"]),
        failures=_table(failures, ["kind", "model", "probe", "setting", "unit_id",
                                   "pair_id", "error"]),
        n_failures=n_failures,
        sections=sections,
        claims=claim_rows,
        criteria=criteria.model_dump(),
        criteria_source=criteria_source or "analysis/criteria.yaml (as shipped)",
        read=read,
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    env.filters["verdict_word"] = lambda v: _VERDICT_WORDS.get(v, v)
    return env


def render(report: Report) -> tuple[str, str]:
    """(HTML, Markdown) text of the report."""
    env = _environment()
    return (env.get_template("report.html.j2").render(report=report),
            env.get_template("report.md.j2").render(report=report))


def _numbers_json(report: Report) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, (dt.datetime, dt.date)):
            return value.isoformat()
        return value

    return {"runs": report.runs,
            "criteria": {"source": report.criteria_source, **report.criteria},
            "claims": plain(report.claims),
            "sections": [{"model": s.model, "weights": s.weights, "embed": s.embed,
                          **plain(s.numbers)} for s in report.sections]}


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                 gallery_limit: int = 6, criteria: Criteria | None = None,
                 criteria_source: str | None = None) -> dict[str, Path]:
    """Write report.html, report.md (+ its PNGs) and report.json into out_dir; their paths."""
    report = build_report(run_dirs, gallery_limit=gallery_limit, criteria=criteria,
                          criteria_source=criteria_source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html, markdown = render(report)
    for section in report.sections:
        for claim in section.claims:
            for fig in claim.figures:
                (out / fig.filename).write_bytes(fig.png)
        for block in section.gallery:
            for row in block.rows:
                for which, name in row.files.items():
                    (out / name).write_bytes(getattr(row.triple, f"{which}_png"))
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "report.json"}
    paths["html"].write_text(html, encoding="utf-8")
    paths["md"].write_text(markdown, encoding="utf-8")
    paths["json"].write_text(json.dumps(_numbers_json(report), indent=1, default=str),
                             encoding="utf-8")
    return paths
