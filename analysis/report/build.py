"""Assemble the report: one section per model, weights and embedding point, one claim per
probe setting, from the numbers (model.py), the sentences (sentences.py), the figures and the
gallery. No file is written here (render.py does)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from analysis.claims import Criteria, claims_records, load_criteria, random_weights_caveat
from analysis.db import ReadStats, open_runs, read_manifest, read_progress, read_stats, snapshot_estimates
from analysis.named import run_named, run_named_arrow
from analysis.report import figures
from analysis.report.gallery import make_triple
from analysis.report.model import (
    CLAIM_QUERIES,
    Claim,
    GalleryBlock,
    GalleryRow,
    Group,
    Report,
    Section,
    VerdictRows,
    _by_setting,
    _Data,
    _for,
    _one,
    _read_data,
    _records,
    _slug,
    _slug_cfg,
    _table,
    fmt,
)
from analysis.report.sentences import (
    _claim_equivalence,
    _claim_geometry,
    _claim_lipschitz,
    _claim_normal,
    _claim_overgeneralisation,
    _named,
    _with_setting,
)


def _claim_verdicts(con: duckdb.DuckDBPyConnection, criteria: Criteria) -> list[dict[str, Any]]:
    """The claims table under `criteria` (the named query `claims`' rows, checks parsed)."""
    return claims_records(con, criteria)


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
    # 5. the headline (probe equivalence), one claim per equivalence setting, where the run has one
    for g in rows["geometry"]:
        fig = figures.geometry_curves(data.geometry_curves.get(g["config_hash"], pd.DataFrame()))
        claims.append(_with_setting(
            _claim_geometry(g, fig, f"{slug}-{_slug_cfg(g['config_hash'])}", verdicts), g))

    caveat = random_weights_caveat(weights)
    first = next((c for c in claims if not c.empty), None)
    if caveat and first is not None:  # the section opens with it too
        first.sentences.insert(0, caveat)
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
        from analysis.report.transfer import transfer_section  # issue 23: its own section

        transfer = transfer_section(con)
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
        transfer=transfer,
        read=read,
        caveats=[c for c in [random_weights_caveat([s.weights for s in sections])] if c],
    )
