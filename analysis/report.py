"""The findings report: the paper's four claims, per model, weights and embedding point, with
numbers from the named queries, plots and a gallery of matched triples.

A probe run with several settings (several `config_hash` values: e.g. match presets paper and
default, several lr) is never pooled: each claim is stated once per setting of its probe (its
own sentences, table and plots, headed by the setting's parameters), and the gallery has one
block per match setting.

    paths = write_report(["runs/demo"], "report/")   # report/report.html, report/report.md, PNGs

`report.html` is self-contained (images as base64 data URIs, inline CSS, no JavaScript);
`report.md` references the PNG files written next to it; `report.json` holds the exact query
rows every stated number comes from (per section, each query's rows: one per setting). A claim
with no data says so plainly.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import numpy as np
import pandas as pd

from analysis import figures
from analysis.db import open_runs, read_manifest, read_progress
from analysis.gallery import Triple, make_triple
from analysis.named import run_named

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


def _claim_equivalence(eq: dict | None, inv: dict | None, fig: bytes | None, slug: str) -> Claim:
    claim = Claim("equivalence", "1. Equivalence: a different image, the same embedding")
    if not eq or not eq["n_ok"]:
        claim.empty = f"No match rows (status ok) {_NO_DATA}: claim 1 not measured."
        return claim
    claim.sentences.append(
        f"{fmt(eq['n_success'], 'int')} of {fmt(eq['n_ok'], 'int')} matches reached the target's "
        f"embedding ({fmt(eq['success_rate'], 'pct')} success rate), in a median of "
        f"{fmt(eq['median_steps_success'])} steps for those that did. The final rel_dist has median "
        f"{fmt(eq['median_rel_dist'])} (source vs target at the start: "
        f"{fmt(eq['median_rel_dist_start'])}) and the final cosine median {fmt(eq['median_cos'])}."
    )
    if inv and inv["n_success"]:
        claim.sentences.append(
            f"The matched images still look like their sources: median PSNR "
            f"{fmt(inv['median_psnr'])} dB (lowest {fmt(inv['min_psnr'])} dB), median SSIM "
            f"{fmt(inv['median_ssim'])}, median largest pixel change "
            f"{fmt(inv['median_pix_linf_255'])}/255. {fmt(inv['quant_success_rate'], 'pct')} of the "
            f"successful matches still succeed after rounding to 8-bit pixels."
        )
    else:
        claim.sentences.append("No match succeeded, so there are no pixel-change numbers.")
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


def _claim_normal(rows: list[dict], fig: bytes | None, slug: str) -> Claim:
    claim = Claim("normal_space", "2. Normal spaces: invisible changes, far-moving embeddings")
    if not rows:
        claim.empty = f"No perturb rows (status ok) {_NO_DATA}: claim 2 not measured."
        return claim
    for norm in sorted({r["norm"] for r in rows}):
        top = max((r for r in rows if r["norm"] == norm), key=lambda r: r["eps"])
        claim.sentences.append(
            f"An {_NORM_NAMES.get(norm, norm)} change of at most ε = {_eps_label(norm, top['eps'])} moves the embedding by a "
            f"median {fmt(top['median_disp_over_pair'])} times the source-target distance; a random "
            f"change of the same size moves it {fmt(top['median_random_disp_over_pair'])} times "
            f"(median ratio {fmt(top['median_over_random'], 'x')})."
        )
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


def _claim_lipschitz(lip: dict | None, families: list[dict], figs: list[tuple[str, bytes | None]],
                     slug: str) -> Claim:
    claim = Claim("lipschitz", "3. Lipschitz evidence: tiny along equivalence, huge along normals")
    if not lip or not lip["n_pairs"]:
        claim.empty = f"No lipschitz rows (status ok) {_NO_DATA}: claim 3 not measured."
        return claim
    claim.sentences.append(
        f"Over {fmt(lip['n_pairs'], 'int')} pairs, σ1 (the largest singular value of the Jacobian) "
        f"is a median {fmt(lip['median_sigma1_over_random'], 'x')} the median estimate along random "
        f"directions (geometric mean {fmt(lip['geomean_sigma1_over_random'], 'x')}, range "
        f"{fmt(lip['min_sigma1_over_random'], 'x')} to {fmt(lip['max_sigma1_over_random'], 'x')})."
    )
    if lip.get("median_top_over_null") is not None:
        claim.sentences.append(
            f"Top singular directions exceed null directions (the whole row space of the Jacobian "
            f"projected out) by a median {fmt(lip['median_top_over_null'], 'x')}."
        )
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


def _claim_overgeneralisation(og: dict | None) -> Claim:
    claim = Claim("overgeneralisation", "4. Overgeneralisation: labels follow the embedding")
    if not og or not og["n_ok"]:
        claim.empty = f"No match rows (status ok) {_NO_DATA}: claim 4 not measured."
        return claim
    if og["n_head_labelled_success"]:
        claim.sentences.append(
            f"The classifier head labels {fmt(og['head_target_rate_success'], 'pct')} of the "
            f"successful matches as the target ({fmt(og['head_target_rate_all'], 'pct')} of all "
            f"matches); {fmt(og['head_source_rate_success'], 'pct')} keep the source's label."
        )
    else:
        claim.sentences.append("No classifier-head labels were recorded for successful matches.")
    if og["n_knn_labelled_success"]:
        claim.sentences.append(
            f"k-NN over clean embeddings labels {fmt(og['knn_target_rate_success'], 'pct')} of the "
            f"successful matches as the target ({fmt(og['knn_target_rate_all'], 'pct')} of all "
            f"matches)."
        )
    else:
        claim.sentences.append("No k-NN labels were recorded for successful matches.")
    return claim


# ---------------------------------------------------------------- assembling

def _with_setting(claim: Claim, row: dict[str, Any] | None) -> Claim:
    if row is not None:
        claim.setting = row.get("setting") or row["config_hash"]
        claim.config_hash = row["config_hash"]
    return claim


def _gallery(con: duckdb.DuckDBPyConnection, group: Group, slug: str,
             limit: int) -> list[GalleryBlock]:
    model, weights, _ = group
    rows = _for(_records(run_named(con, "gallery", {"model": model, "weights": weights,
                                                    "limit": str(limit)})), group)
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
                parts.append(f"head: source {r.get('pred_src')}, target {r.get('pred_tgt')}, "
                             f"matched {r.get('pred_adv')}")
            if r.get("variant"):
                parts.append(str(r["variant"]))
            triple = make_triple(str(r["pair_id"]), "; ".join(parts), r["src_png"], r["adv_png"],
                                 r["tgt_png"])
            cfg = _slug_cfg(config_hash) if config_hash else "x"
            files = {w: f"gallery-{slug}-{cfg}-{k}-{w}.png" for w in ("src", "adv", "tgt", "diff")}
            out.append(GalleryRow(triple, files))
        blocks.append(GalleryBlock(part[0].get("setting"), config_hash, out))
    return blocks


def _section(con: duckdb.DuckDBPyConnection, group: Group, results: dict[str, list[dict]],
             gallery_limit: int) -> Section:
    model, weights, embed = group
    slug = _slug("-".join(x for x in (model, weights, embed) if x))
    rows = {name: _for(results[name], group) for name in CLAIM_QUERIES}
    base = {"model": model, "weights": weights}

    def params(config_hash: str) -> dict[str, str]:
        return {**base, "config_hash": config_hash}

    claims: list[Claim] = []
    # 1. equivalence, one claim per match setting
    for cfg, part in _by_setting(rows["equivalence"]).items():
        eq = part[0]
        fig = figures.match_distributions(run_named(con, "match_pairs", params(cfg))) \
            if eq["n_ok"] else None
        claim = _claim_equivalence(eq, _one(rows["invisibility"], cfg), fig,
                                   f"{slug}-{_slug_cfg(cfg)}")
        claims.append(_with_setting(claim, eq))
    if not rows["equivalence"]:
        claims.append(_claim_equivalence(None, None, None, slug))
    # 2. normal space, one claim per perturb setting
    for cfg, normal in _by_setting(rows["normal_space"]).items():
        fig = figures.eps_curves(run_named(con, "normal_space", params(cfg)))
        claims.append(_with_setting(_claim_normal(normal, fig, f"{slug}-{_slug_cfg(cfg)}"),
                                    normal[0]))
    if not rows["normal_space"]:
        claims.append(_claim_normal([], None, slug))
    # 3. Lipschitz, one claim per lipschitz setting
    for cfg, part in _by_setting(rows["lipschitz"]).items():
        lip = part[0]
        lip_figs = [
            ("Directional Lipschitz estimates by direction family (log axis)",
             figures.lipschitz_families(run_named(con, "lipschitz_directions", params(cfg)))),
            ("Nonlinearity against the step size h",
             figures.nonlinearity_curves(run_named(con, "nonlinearity", params(cfg)))),
        ]
        families = [f for f in rows["lipschitz_families"] if f["config_hash"] == cfg]
        claims.append(_with_setting(
            _claim_lipschitz(lip, families, lip_figs, f"{slug}-{_slug_cfg(cfg)}"), lip))
    if not rows["lipschitz"]:
        claims.append(_claim_lipschitz(None, [], [], slug))
    # 4. overgeneralisation, one claim per match setting
    for og in rows["overgeneralisation"]:
        claims.append(_with_setting(_claim_overgeneralisation(og), og))
    if not rows["overgeneralisation"]:
        claims.append(_claim_overgeneralisation(None))

    return Section(model, weights, embed, slug, claims,
                   _gallery(con, group, slug, gallery_limit), rows)


def _group_key(group: Group) -> tuple[str, str, str]:
    return group[0], group[1], group[2] or ""


def _run_info(run_dir: Path) -> dict[str, Any]:
    progress = read_progress(run_dir) or {}
    manifest = read_manifest(run_dir) or {}
    return {
        "path": str(run_dir),
        "run_id": manifest.get("run_id") or progress.get("run_id") or run_dir.name,
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
                 max_failures: int = 25) -> Report:
    """Query the runs and assemble the report (no file written)."""
    con = open_runs(run_dirs)
    try:
        results = {name: _records(run_named(con, name, {})) for name in CLAIM_QUERIES}
        groups = sorted({(r["model"], r["weights"], r.get("embed")) for name in CLAIM_QUERIES
                         for r in results[name] if r["model"] is not None}, key=_group_key)
        sections = [_section(con, g, results, gallery_limit) for g in groups]
        overview = _records(run_named(con, "overview", {}))
        failures = _records(run_named(con, "failures", {}))
    finally:
        con.close()
    runs = [_run_info(Path(d)) for d in run_dirs]
    return Report(
        title="vitsweep findings: " + ", ".join(r["run_id"] for r in runs),
        generated_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=runs,
        overview=_table(overview, ["model", "weights", "embed", "probe", "setting", "units",
                                   "units_ok", "units_error", "units_in_progress", "pairs_ok",
                                   "pairs_error"]),
        failures=_table(failures[:max_failures], ["kind", "model", "probe", "setting", "unit_id",
                                                  "pair_id", "error"]),
        n_failures=len(failures),
        sections=sections,
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
            "sections": [{"model": s.model, "weights": s.weights, "embed": s.embed,
                          **plain(s.numbers)} for s in report.sections]}


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                 gallery_limit: int = 6) -> dict[str, Path]:
    """Write report.html, report.md (+ its PNGs) and report.json into out_dir; their paths."""
    report = build_report(run_dirs, gallery_limit=gallery_limit)
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
