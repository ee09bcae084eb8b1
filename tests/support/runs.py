"""A small but realistic run directory with known values, for analysis/dashboard tests.

`make_fixture_run(root)` writes `root/<run_id>/` exactly as docs/results.md describes
(spec.yaml, manifest.json, progress.json, results/<table>/probe=…/model=…/<unit>.parquet), with
every table built by `sweep.schema.to_table`, so the schemas are the real ones.
`fixture_rows(models)` returns the same rows as plain dicts, so a test can compute its expected
answer independently (plain Python over the rows) instead of trusting a query.

Every probe setting has its own `config_hash` (`config_hash(model, probe, setting)`, per model as
the engine's are) and `params` JSON (`MATCH_PARAMS`, `PERTURB_PARAMS`, `LIPSCHITZ_PARAMS`).

Known values, per model (model index m = 0, 1, … adds m to a few numbers so models differ):

- match unit `<model>-match-0` (setting "default", `MATCH_PARAMS["default"]`): pairs p0..p4.
  p0..p3 status ok, p4 status error (decode error).
  success: p0, p1, p2 True, p3 False  -> success rate 3/4 among ok rows.
  steps 100, 200, 300, 1000; psnr 40+m, 35+m, 30+m, 25+m; ssim 0.99, 0.95, 0.9, 0.8;
  rel_dist 0.05, 0.08, 0.1, 0.4; cos 0.99, 0.98, 0.97, 0.8; quant_success True, False, True, False.
  head labels: pred_adv == pred_tgt for p0, p1, p3; k-NN: knn_adv == knn_tgt for p0, p2.
- the FIRST model only (unless `paper=False`) also has a second match setting, unit
  `<model>-match-paper-0` (setting "paper", `MATCH_PARAMS["paper"]`: preset paper, lr 0.08,
  max_steps 12000, optimizer gd): pairs p0..p3, all ok, no error row.
  success: p0, p2 True, p1, p3 False  -> success rate 1/2.
  steps 2000, 12000, 4000, 12000; psnr 45+m, 20+m, 42+m, 18+m; ssim 0.995, 0.6, 0.99, 0.5;
  rel_dist 0.01, 0.5, 0.02, 0.6; cos 0.999, 0.7, 0.998, 0.6; quant_success True, False, False, False.
  head labels: pred_adv == pred_tgt for p0, p2; k-NN: knn_adv == knn_tgt for p2, p3.
- perturb unit `<model>-perturb-0`: pairs p0..p2 ok, plus an error row for p3.
  linf eps k/255 for k in 1, 2, 4, 8: disp_over_pair = 0.1·k·(1 + 0.1·i) for pair i (×(1+m)),
  random_disp_over_pair = disp_over_pair / 20. l2 eps 0.25, 0.5, 1.0: disp_over_pair = eps·(1+0.1·i).
- lipschitz unit `<model>-lipschitz-0`: pairs p0, p1; h in 0.01, 0.1, 1.0;
  top directions 0..2 with sigma = l_jvp = (100, 50, 25)·(i+1)·(1+m);
  random directions 0..4 with l_jvp = (1, 2, 3, 4, 5)·(i+1)  -> median 3·(i+1), so
  sigma1 / median random = 100·(1+m)/3 for every pair;
  null directions 0..1 with l_jvp 0.5·(i+1), 1.5·(i+1); match direction 0 with l_jvp 0.2;
  grad direction 0 with l_jvp 12 (rank 48 on every row);
  l_fd = l_jvp·(1 + 0.1·h), nonlinearity = 0.1·h (every family).
- spectrum (same unit): pairs p0, p1, jacobian fp32, rank 48, 48 singular values
  sigma_j = 100·(i+1)·(1+m)·2^-j for j = 0..47.
- equivalence unit `<model>-equivalence-0` (only with `geometry=True`): pairs p0..p3, pair_dist
  2, delta 0.05; walk_radius (3, 4, 5, 6)·(1+m), random_walk_radius 1, 1, 1, 0 -> walk ratios
  3, 4, 5, inf; match_success True, True, True, False; path_target_end 0.05 and path_target_max
  0.06, 0.08, 0.5 (p0..p2: 2 of 3 within twice the tolerance); curves of 5 points.
- images: p0 and p1 of every default match unit, 16×16 RGB PNGs; adv = src + 2 (clipped);
  p0 of the paper match unit with adv = src + 5.
- units: every unit above ok; for the last model a failed perturb unit
  `<model>-perturb-1` (status error, no result rows).

`complete=False` writes a run still being written: progress state "running", no lipschitz,
units or images tables, and a stray temporary `.x.tmp` file next to a Parquet file.

With the default two models that is 7 units done of 8 (one failed), 24 pairs ok and 2 in error.
"""

from __future__ import annotations

import io
import re
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from sweep.schema import partition_dir, to_table

RUN_ID = "fixture-run"
WEIGHTS = "random:0"
LINF_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
L2_EPS = (0.25, 0.5, 1.0)
HS = (0.01, 0.1, 1.0)
IMG = 16

# The probes' validated parameters, as the engine writes them into `params` (JSON, sorted keys).
MATCH_PARAMS = {
    "default": {"lr": 0.01, "max_steps": 1000, "optimizer": "adam", "preset": "default", "tau": None},
    "paper": {"lr": 0.08, "max_steps": 12000, "optimizer": "gd", "preset": "paper", "tau": 0.0001},
}
PERTURB_PARAMS = {"norm": "linf", "steps": 10}
LIPSCHITZ_PARAMS = {"h": list(HS), "top_k": 3}
EQUIVALENCE_PARAMS = {"path_points": 5, "walk_steps": 20}
# The `setting` text analysis/ derives: the parameters that differ between the match settings;
# perturb and lipschitz have one setting each, so every (non-null) parameter.
MATCH_SETTING_TEXT = {
    "default": "lr=0.01, max_steps=1000, optimizer=adam, preset=default, tau=null",
    "paper": "lr=0.08, max_steps=12000, optimizer=gd, preset=paper, tau=0.0001",
}
PERTURB_SETTING_TEXT = "norm=linf, steps=10"
LIPSCHITZ_SETTING_TEXT = "h=[0.01,0.1,1.0], top_k=3"


def _slug(model: str) -> str:
    """A unit-id-safe form of a model name (`pkg.mod:f` -> `pkg_mod_f`)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", model)


def config_hash(model: str, probe: str, setting: str = "default", weights: str = WEIGHTS) -> str:
    """The fixture's config_hash of one probe setting of one model and weights (the engine's
    hashes the probe, its parameters, model, weights and embedding point)."""
    return f"{probe}-{setting}-{_slug(model)}-{_slug(weights)}"


def params_json(probe: str, setting: str = "default") -> str:
    params = {"match": MATCH_PARAMS.get(setting), "perturb": PERTURB_PARAMS,
              "lipschitz": LIPSCHITZ_PARAMS, "equivalence": EQUIVALENCE_PARAMS}[probe]
    return json.dumps(params, sort_keys=True)


def _ident(model: str, probe: str, unit_id: str, pair: int, *, run_id: str,
           weights: str = WEIGHTS, setting: str = "default") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "unit_id": unit_id,
        "pair_id": f"p{pair}",
        "src_key": f"src/{pair:05d}",
        "tgt_key": f"tgt/{pair:05d}",
        "src_label": 10 + pair,
        "tgt_label": 20 + pair,
        "model": model,
        "weights": weights,
        "embed": "pre_logits",
        "probe": probe,
        "config_hash": config_hash(model, probe, setting, weights),
        "params": params_json(probe, setting),
        "status": "ok",
        "error": None,
    }


_MATCH_VALUES = {
    "default": {
        "success": [True, True, True, False],
        "steps": [100, 200, 300, 1000],
        "psnr": [40.0, 35.0, 30.0, 25.0],
        "ssim": [0.99, 0.95, 0.9, 0.8],
        "rel": [0.05, 0.08, 0.1, 0.4],
        "cos": [0.99, 0.98, 0.97, 0.8],
        "quant": [True, False, True, False],
        "head_to_tgt": [True, True, False, True],
        "knn_to_tgt": [True, False, True, False],
        "log_every": 50,
    },
    "paper": {
        "success": [True, False, True, False],
        "steps": [2000, 12000, 4000, 12000],
        "psnr": [45.0, 20.0, 42.0, 18.0],
        "ssim": [0.995, 0.6, 0.99, 0.5],
        "rel": [0.01, 0.5, 0.02, 0.6],
        "cos": [0.999, 0.7, 0.998, 0.6],
        "quant": [True, False, False, False],
        "head_to_tgt": [True, False, True, False],
        "knn_to_tgt": [False, False, True, True],
        "log_every": 500,
    },
}


def match_unit(model: str, setting: str = "default") -> str:
    """The unit id of a model's match unit of one setting."""
    return f"{_slug(model)}-match-0" if setting == "default" else f"{_slug(model)}-match-{setting}-0"


def _match_rows(model: str, m: int, run_id: str, weights: str,
                setting: str = "default") -> list[dict[str, Any]]:
    unit = match_unit(model, setting)
    v = _MATCH_VALUES[setting]
    success, steps, ssim, rel, cos = v["success"], v["steps"], v["ssim"], v["rel"], v["cos"]
    psnr = [p + m for p in v["psnr"]]
    quant, head_to_tgt, knn_to_tgt = v["quant"], v["head_to_tgt"], v["knn_to_tgt"]
    log_every = v["log_every"]
    rows = []
    for i in range(4):
        pred_src, pred_tgt = 100 + i, 200 + i
        rows.append(
            {
                **_ident(model, "match", unit, i, run_id=run_id, weights=weights, setting=setting),
                "success": success[i],
                "steps": steps[i],
                "sq_l2": (rel[i] * 10.0) ** 2,
                "cos": cos[i],
                "rel_dist": rel[i],
                "rel_dist_start": 1.2 + 0.1 * i,
                "cos_start": 0.1 * i,
                "pix_l2": 1.0 + i,
                "pix_linf": (4.0 + i) / 255,
                "psnr": psnr[i],
                "ssim": ssim[i],
                "quant_success": quant[i],
                "quant_cos": cos[i] - 0.01,
                "quant_rel_dist": rel[i] + 0.01,
                "pred_src": pred_src,
                "pred_tgt": pred_tgt,
                "pred_adv": pred_tgt if head_to_tgt[i] else pred_src,
                "prob_src": 0.9,
                "prob_tgt": 0.8,
                "prob_adv": 0.7,
                "knn_src": pred_src,
                "knn_tgt": pred_tgt,
                "knn_adv": pred_tgt if knn_to_tgt[i] else pred_src,
                "log_every": log_every,
                "loss_trajectory": [float(10.0 / (k + 1)) for k in range(steps[i] // log_every + 1)],
            }
        )
    if setting != "default":
        return rows
    err = _ident(model, "match", unit, 4, run_id=run_id, weights=weights)
    err.update(status="error", error="ImageDecodeError: cannot identify image file 'src/00004'")
    rows.append(err)
    return rows


def _perturb_rows(model: str, m: int, run_id: str, weights: str) -> list[dict[str, Any]]:
    unit = f"{_slug(model)}-perturb-0"
    rows = []
    for i in range(3):
        grid = [("linf", eps, 0.1 * round(eps * 255)) for eps in LINF_EPS]
        grid += [("l2", eps, eps) for eps in L2_EPS]
        for norm, eps, base in grid:
            dop = base * (1 + 0.1 * i) * (1 + m)
            rows.append(
                {
                    **_ident(model, "perturb", unit, i, run_id=run_id, weights=weights),
                    "norm": norm,
                    "eps": eps,
                    "steps": 10,
                    "emb_disp": dop * 30.0,
                    "rel_disp": dop * 0.5,
                    "disp_over_pair": dop,
                    "random_disp": dop * 30.0 / 20,
                    "random_rel_disp": dop * 0.5 / 20,
                    "random_disp_over_pair": dop / 20,
                    "cos_after": 1.0 - dop / 10,
                    "pix_linf": eps if norm == "linf" else None,
                    "pred_src": 100 + i,
                    "pred_adv": 100 + i if eps < 4 / 255 else 300 + i,
                }
            )
    err = _ident(model, "perturb", unit, 3, run_id=run_id, weights=weights)
    err.update(status="error", error="RuntimeError: CUDA out of memory")
    rows.append(err)
    return rows


def _lipschitz_rows(model: str, m: int, run_id: str, weights: str) -> list[dict[str, Any]]:
    unit = f"{_slug(model)}-lipschitz-0"
    rows = []
    for i in range(2):
        scale = i + 1
        families = (
            [("top", d, s * scale * (1 + m), s * scale * (1 + m)) for d, s in enumerate((100, 50, 25))]
            + [("random", d, v * scale, None) for d, v in enumerate((1, 2, 3, 4, 5))]
            + [("null", d, v * scale, None) for d, v in enumerate((0.5, 1.5))]
            + [("match", 0, 0.2, None)]
            + [("grad", 0, 12.0, None)]
        )
        for family, direction, l_jvp, sigma in families:
            for h in HS:
                rows.append(
                    {
                        **_ident(model, "lipschitz", unit, i, run_id=run_id, weights=weights),
                        "family": family,
                        "direction": direction,
                        "h": h,
                        "l_fd": l_jvp * (1 + 0.1 * h),
                        "l_jvp": float(l_jvp),
                        "sigma": None if sigma is None else float(sigma),
                        "nonlinearity": 0.1 * h,
                        "rank": 48,
                    }
                )
    return rows


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def fixture_images(pair: int, delta: int = 2) -> dict[str, np.ndarray]:
    """The source, matched (src + delta: 2 for the default match setting, 5 for paper) and
    target pixel arrays (H, W, 3) uint8 of a gallery pair."""
    yy, xx = np.mgrid[0:IMG, 0:IMG]
    src = np.stack([xx * 15, yy * 15, np.full_like(xx, 60 + 20 * pair)], axis=-1).astype(np.uint8)
    tgt = np.stack([255 - xx * 15, np.full_like(xx, 200), yy * 15], axis=-1).astype(np.uint8)
    adv = np.clip(src.astype(np.int16) + delta, 0, 255).astype(np.uint8)
    return {"src": src, "adv": adv, "tgt": tgt}


def _image_rows(model: str, run_id: str, setting: str = "default") -> list[dict[str, Any]]:
    rows = []
    for i in range(2 if setting == "default" else 1):
        imgs = fixture_images(i, 2 if setting == "default" else 5)
        rows.append(
            {
                "run_id": run_id,
                "unit_id": match_unit(model, setting),
                "pair_id": f"p{i}",
                "model": model,
                "probe": "match",
                "variant": "",
                "src_png": _png(imgs["src"]),
                "adv_png": _png(imgs["adv"]),
                "tgt_png": _png(imgs["tgt"]),
            }
        )
    return rows


def _pairs_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["unit_id"], r["pair_id"])
        decode_error = r["status"] == "error" and r["error"].startswith("ImageDecodeError")
        seen.setdefault(
            key,
            {
                "run_id": r["run_id"],
                "unit_id": r["unit_id"],
                "pair_id": r["pair_id"],
                "src_key": r["src_key"],
                "tgt_key": r["tgt_key"],
                "src_label": r["src_label"],
                "tgt_label": r["tgt_label"],
                "shard": "shard-000000.tar",
                "model": r["model"],
                "weights": r["weights"],
                "embed": r["embed"],
                "probe": r["probe"],
                "config_hash": r["config_hash"],
                "status": "error" if decode_error else "ok",
                "error": r["error"] if decode_error else None,
            },
        )
    return list(seen.values())


def _unit_row(model: str, probe: str, unit_id: str, rows: list[dict[str, Any]], run_id: str,
              *, weights: str = WEIGHTS, status: str = "ok", error: str | None = None,
              setting: str = "default") -> dict[str, Any]:
    import datetime as dt

    start = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    pair_ids = {r["pair_id"] for r in rows}
    err_ids = {r["pair_id"] for r in rows if r["status"] == "error"}
    return {
        "run_id": run_id,
        "unit_id": unit_id,
        "model": model,
        "weights": weights,
        "embed": "pre_logits",
        "probe": probe,
        "config_hash": config_hash(model, probe, setting, weights),
        "params": params_json(probe, setting),
        "shard": "shard-000000.tar",
        "status": status,
        "error": error,
        "attempts": 1 if status == "ok" else 3,
        "n_pairs": len(pair_ids),
        "n_ok": len(pair_ids - err_ids),
        "n_error": len(err_ids),
        "started_at": start,
        "finished_at": start + dt.timedelta(seconds=30),
        "seconds": 30.0,
        "worker": "worker-0",
        "host": "localhost",
        "device": "cpu",
    }


def _equivalence_rows(model: str, m: int, run_id: str, weights: str) -> list[dict[str, Any]]:
    unit = f"{_slug(model)}-equivalence-0"
    rows = []
    for i in range(4):
        success = i < 3
        target_max = (0.06, 0.08, 0.5, None)[i]
        rows.append({
            **_ident(model, "equivalence", unit, i, run_id=run_id, weights=weights),
            "pair_dist": 2.0, "delta": 0.05, "match_success": success, "match_steps": 100 * (i + 1),
            "match_rel_dist": 0.04 if success else 0.3,
            "path_points": 5 if success else None,
            "path_target_max": target_max, "path_target_end": 0.05 if success else None,
            "path_chord_max": 0.01 if success else None, "path_linear_max": 0.02 if success else None,
            "path_target_curve": [0.0, 0.01, 0.02, 0.03, 0.05] if success else None,
            "walk_kept": 20, "walk_radius": float((3, 4, 5, 6)[i] * (1 + m)), "walk_psnr": 30.0, "walk_ssim": 0.9,
            "walk_curve": [0.01] * 20, "random_walk_kept": (3, 3, 3, 0)[i],
            "random_walk_radius": (1.0, 1.0, 1.0, 0.0)[i],
            "walk_ratio": float((3, 4, 5, 6)[i] * (1 + m)) if i < 3 else None,
        })
    return rows


def _spectrum_rows(model: str, m: int, run_id: str, weights: str) -> list[dict[str, Any]]:
    unit = f"{_slug(model)}-lipschitz-0"
    return [{**_ident(model, "lipschitz", unit, i, run_id=run_id, weights=weights), "jacobian": "fp32", "rank": 48,
             "n_values": 48, "singular_values": [100.0 * (i + 1) * (1 + m) * 2.0**-j for j in range(48)]}
            for i in range(2)]


def fixture_rows(models: Sequence[str] = ("vit_a", "vit_b"), *, run_id: str = RUN_ID,
                 complete: bool = True, weights: str = WEIGHTS,
                 paper: bool = True, geometry: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every row of the fixture run, by table (the exact rows make_fixture_run writes).
    `paper`: the first model also has the second match setting (preset paper)."""
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in ("match", "perturb", "lipschitz", "equivalence", "spectrum",
                                                               "pairs", "units", "images")}
    for m, model in enumerate(models):
        units = [("match", "default", _match_rows(model, m, run_id, weights))]
        if paper and m == 0:
            units.append(("match", "paper", _match_rows(model, m, run_id, weights, "paper")))
        units.append(("perturb", "default", _perturb_rows(model, m, run_id, weights)))
        if complete:
            units.append(("lipschitz", "default", _lipschitz_rows(model, m, run_id, weights)))
            tables["spectrum"] += _spectrum_rows(model, m, run_id, weights)
        if geometry:
            units.append(("equivalence", "default", _equivalence_rows(model, m, run_id, weights)))
        for probe, setting, rows in units:
            tables[probe] += rows
            tables["pairs"] += _pairs_rows(rows)
            if complete:
                tables["units"].append(
                    _unit_row(model, probe, rows[0]["unit_id"], rows, run_id, weights=weights,
                              setting=setting)
                )
            if complete and probe == "match":
                tables["images"] += _image_rows(model, run_id, setting)
    if complete and models:
        last = models[-1]
        tables["units"].append(
            _unit_row(last, "perturb", f"{_slug(last)}-perturb-1", [], run_id, weights=weights, status="error",
                      error="WorkerCrashed: worker died 3 times (exit code 137)")
        )
    return tables


def _write(run_dir: Path, table: str, rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["probe"], r["model"], r["unit_id"]), []).append(r)
    for (probe, model, unit_id), group in groups.items():
        folder = run_dir / partition_dir(table, probe, model)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_table(table, group), folder / f"{unit_id}.parquet")


def make_fixture_run(root: Path, *, models: Sequence[str] = ("vit_a", "vit_b"),
                     complete: bool = True, run_id: str = RUN_ID, weights: str = WEIGHTS,
                     only: Sequence[str] | None = None, paper: bool = True, geometry: bool = False) -> Path:
    """Write the fixture run under `root/<run_id>` and return its path. `only` limits the
    tables written (e.g. `only=("match",)` for a run with match rows only); `paper=False`
    leaves out the first model's second match setting."""
    run_dir = Path(root) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = fixture_rows(models, run_id=run_id, complete=complete, weights=weights, paper=paper, geometry=geometry)
    if only is not None:
        tables = {t: (rows if t in only else []) for t, rows in tables.items()}
    for table, rows in tables.items():
        _write(run_dir, table, rows)
    spec = (
        f"name: {run_id}\n"
        f"models:\n" + "".join(f"  - name: {m}\n    weights: {weights}\n" for m in models)
        + "probes:\n  match: {preset: [default, paper], max_steps: 1000}\n  perturb: {norm: linf}\n"
        "  lipschitz: {k: 3}\nshards: fixture/shard-{000000..000001}.tar\n"
    )
    (run_dir / "spec.yaml").write_text(spec)
    manifest = {
        "run_id": run_id,
        "spec_hash": "0123456789abcdef",
        "versions": {"python": "3.11.0", "torch": "2.4.0", "timm": "1.0.15", "ray": "2.40.0",
                     "vitsweep": "0.1.0"},
        "git_commit": "deadbeef",
        "devices": ["cpu"],
        "hostname": "localhost",
        "started_at": "2024-01-01T12:00:00+00:00",
        "finished_at": "2024-01-01T12:05:00+00:00" if complete else None,
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    failures = [] if not complete else [
        {"unit_id": f"{_slug(models[-1])}-perturb-1",
         "error": "WorkerCrashed: worker died 3 times (exit code 137)"}
    ]
    result_units = {r["unit_id"] for t in ("match", "perturb", "lipschitz", "equivalence") for r in tables[t]}
    n_paper = 1 if paper and models else 0
    n_units = (4 if geometry else 3) * len(models) + n_paper + (1 if complete else 0)
    progress = {
        "run_id": run_id,
        "state": "finished" if complete else "running",
        "units_total": n_units if complete else n_units + 2 * len(models),
        "units_done": len(result_units),
        "units_failed": len(failures),
        "units_skipped": 0,
        "pairs_done": sum(1 for r in tables["pairs"] if r["status"] == "ok"),
        "pairs_error": sum(1 for r in tables["pairs"] if r["status"] == "error"),
        "pairs_per_s": 1.5,
        "elapsed_s": 300.0,
        "eta_s": None if complete else 120.0,
        "started_at": "2024-01-01T12:00:00+00:00",
        "updated_at": "2024-01-01T12:05:00+00:00",
        "failures": failures,
    }
    (run_dir / "progress.json").write_text(json.dumps(progress, indent=2))
    if not complete and models:
        folder = run_dir / partition_dir("match", "match", models[0])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{_slug(models[0])}-match-1.x.tmp").write_bytes(b"PAR1 half-written")
    return run_dir


# ---------------------------------------------------------------- the scale fixture
#
# A large run shaped like one ImageNet-val sweep, written with the engine's own writer
# (sweep.run.store.RunStore) and schemas. `make_scale_run(root)` with the defaults is the
# benchmark's run (75,000 pairs per probe, 3 models, 450 units, 1,650 Parquet files); the test
# suite writes a small one of the same shape (`make_scale_run(root, pairs=120,
# pairs_per_unit=10)`: a few thousand rows). Values are random but seeded, with realistic
# shapes: successes and failures, errors, two settings per probe, galleries.

SCALE_RUN_ID = "scale-run"
SCALE_MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "deit_base_patch16_224")
SCALE_MATCH_PARAMS = (
    {"lr": 0.01, "max_steps": 1000, "optimizer": "adam", "preset": "default", "tau": None},
    {"lr": 0.08, "max_steps": 12000, "optimizer": "gd", "preset": "paper", "tau": 0.0001},
)
SCALE_PERTURB_PARAMS = ({"norm": "linf", "steps": 10}, {"norm": "linf", "steps": 40})
SCALE_LIPSCHITZ_PARAMS = ({"h": [0.01, 0.1], "seed": 0, "top_k": 2},
                          {"h": [0.01, 0.1], "seed": 1, "top_k": 2})
SCALE_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
SCALE_HS = (0.01, 0.1)
# (family, direction) of every Lipschitz direction: 6 directions x 2 step sizes = 12 rows a pair
SCALE_DIRECTIONS = (("top", 0), ("top", 1), ("random", 0), ("random", 1), ("null", 0), ("match", 0))
SCALE_ERRORS = ("ImageDecodeError: cannot identify image file",
                "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
                "FloatingPointError: non-finite loss at step 37")
SCALE_IMAGES_PER_UNIT = 4
SCALE_IMG = 64


def _scale_hash(probe: str, params: dict[str, Any], model: str) -> str:
    import hashlib

    text = json.dumps({"probe": probe, "params": params, "model": model, "weights": "timm"},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _arrow(table: str, columns: dict[str, Any], n: int) -> Any:
    """An Arrow table of `table`'s schema from column arrays; columns not given are null."""
    import pyarrow as pa

    from sweep.schema import SCHEMAS

    schema = SCHEMAS[table]
    arrays = []
    for field in schema:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, (pa.Array, pa.ChunkedArray)):
            arrays.append(value.cast(field.type))
        elif isinstance(value, (str, int, float)):
            arrays.append(pa.array([value] * n, type=field.type))
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _masked(values: np.ndarray, ok: np.ndarray) -> list[Any]:
    """values where ok, None elsewhere (error rows carry no metric)."""
    out = values.tolist()
    return [v if k else None for v, k in zip(out, ok)]


def _scale_ident(unit: dict[str, Any], pair_idx: np.ndarray, rng: np.random.Generator,
                 error_rate: float, rows_per_pair: int = 1) -> tuple[dict[str, Any], np.ndarray]:
    """Identity columns of rows `pair_idx` (each pair repeated rows_per_pair times in a row);
    a pair fails whole (every row of it in error), as the engine's pairs do."""
    ok = np.repeat(rng.random(len(pair_idx) // rows_per_pair) >= error_rate, rows_per_pair)
    errors = [None if k else SCALE_ERRORS[int(i) % len(SCALE_ERRORS)] for k, i in zip(ok, pair_idx)]
    cols = {
        "run_id": unit["run_id"], "unit_id": unit["unit_id"],
        "pair_id": [f"p{int(i):06d}" for i in pair_idx],
        "src_key": [f"val/{int(i):08d}" for i in pair_idx],
        "tgt_key": [f"val/{int(i) * 7919 % 50000:08d}" for i in pair_idx],
        "src_label": (pair_idx % 1000).astype(np.int64), "tgt_label": (pair_idx * 7 % 1000).astype(np.int64),
        "model": unit["model"], "weights": "timm", "embed": "pre_logits", "probe": unit["probe"],
        "config_hash": unit["config_hash"], "params": unit["params"],
        "status": ["ok" if k else "error" for k in ok], "error": errors,
    }
    return cols, ok


def _scale_match(unit: dict[str, Any], pairs: np.ndarray, rng: np.random.Generator, m: int,
                 paper: bool) -> dict[str, Any]:
    import pyarrow as pa

    n = len(pairs)
    cols, ok = _scale_ident(unit, pairs, rng, 0.02)
    max_steps = 12000 if paper else 1000
    success = rng.random(n) < (0.55 if paper else 0.8) - 0.1 * m
    steps = np.where(success, np.minimum(rng.lognormal(np.log(max_steps / 4), 0.6, n), max_steps),
                     max_steps).astype(np.int64)
    rel = np.where(success, rng.lognormal(np.log(0.03), 0.4, n), rng.lognormal(np.log(0.3), 0.5, n))
    psnr = rng.normal(38 - 2 * m - (4 if paper else 0), 4, n)
    log_every = 500 if paper else 50
    lengths = steps // log_every + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    k = np.concatenate([np.arange(length) for length in lengths]) if n else np.zeros(0)
    losses = (10.0 / (k + 1)).astype(np.float32)
    pred_src, pred_tgt = (pairs % 1000).astype(np.int64), (pairs * 7 % 1000).astype(np.int64)
    follows = success & (rng.random(n) < 0.85)
    cols.update({
        "success": _masked(success, ok), "steps": _masked(steps, ok),
        "sq_l2": _masked((rel * 12) ** 2, ok), "cos": _masked(1 - rel ** 2 / 2, ok),
        "rel_dist": _masked(rel, ok), "rel_dist_start": _masked(rng.normal(1.1, 0.15, n), ok),
        "cos_start": _masked(rng.normal(0.2, 0.1, n), ok),
        "pix_l2": _masked(rng.lognormal(0, 0.3, n), ok),
        "pix_linf": _masked(rng.integers(2, 12, n) / 255, ok), "psnr": _masked(psnr, ok),
        "ssim": _masked(np.clip(rng.normal(0.95, 0.03, n), 0, 1), ok),
        "quant_success": _masked(success & (rng.random(n) < 0.7), ok),
        "quant_cos": _masked(1 - rel ** 2, ok), "quant_rel_dist": _masked(rel * 1.3, ok),
        "pred_src": _masked(pred_src, ok), "pred_tgt": _masked(pred_tgt, ok),
        "pred_adv": _masked(np.where(follows, pred_tgt, pred_src), ok),
        "prob_src": _masked(rng.random(n), ok), "prob_tgt": _masked(rng.random(n), ok),
        "prob_adv": _masked(rng.random(n), ok),
        "knn_src": _masked(pred_src, ok), "knn_tgt": _masked(pred_tgt, ok),
        "knn_adv": _masked(np.where(follows & (rng.random(n) < 0.9), pred_tgt, pred_src), ok),
        "log_every": _masked(np.full(n, log_every), ok),
        "loss_trajectory": pa.ListArray.from_arrays(pa.array(offsets), pa.array(losses),
                                                    mask=pa.array(~ok)),
    })
    return cols


def _scale_perturb(unit: dict[str, Any], pairs: np.ndarray, rng: np.random.Generator,
                   m: int) -> dict[str, Any]:
    rep = np.repeat(pairs, len(SCALE_EPS))
    n = len(rep)
    cols, ok = _scale_ident(unit, rep, rng, 0.01, len(SCALE_EPS))
    eps = np.tile(np.array(SCALE_EPS), len(pairs))
    dop = eps * 255 * 0.15 * (1 + 0.3 * m) * rng.lognormal(0, 0.35, n)
    pred_src = (rep % 1000).astype(np.int64)
    cols.update({
        "norm": "linf", "eps": _masked(eps, np.ones(n, bool)), "steps": _masked(np.full(n, 10), ok),
        "emb_disp": _masked(dop * 30, ok), "rel_disp": _masked(dop * 0.5, ok),
        "disp_over_pair": _masked(dop, ok), "random_disp": _masked(dop * 1.5, ok),
        "random_rel_disp": _masked(dop / 40, ok),
        "random_disp_over_pair": _masked(dop / 20 * rng.lognormal(0, 0.2, n), ok),
        "cos_after": _masked(1 - dop / 10, ok), "pix_linf": _masked(eps, ok),
        "pred_src": _masked(pred_src, ok),
        "pred_adv": _masked(np.where(rng.random(n) < eps * 40, pred_src + 1, pred_src), ok),
    })
    return cols


def _scale_lipschitz(unit: dict[str, Any], pairs: np.ndarray, rng: np.random.Generator,
                     m: int) -> dict[str, Any]:
    per_pair = len(SCALE_DIRECTIONS) * len(SCALE_HS)
    rep = np.repeat(pairs, per_pair)
    n = len(rep)
    cols, ok = _scale_ident(unit, rep, rng, 0.01, per_pair)
    family = [f for f, _ in SCALE_DIRECTIONS for _ in SCALE_HS] * len(pairs)
    direction = np.tile(np.array([d for _, d in SCALE_DIRECTIONS for _ in SCALE_HS]), len(pairs))
    h = np.tile(np.array(SCALE_HS * len(SCALE_DIRECTIONS)), len(pairs))
    base = {"top": 400.0 * (1 + m), "random": 8.0, "null": 0.5, "match": 0.3}
    l_jvp = np.array([base[f] for f in family]) * rng.lognormal(0, 0.5, n) / np.where(direction > 0, 2, 1)
    nonlin = 0.05 * h * rng.lognormal(0, 0.3, n)
    cols.update({
        "family": family, "direction": _masked(direction, np.ones(n, bool)), "h": _masked(h, np.ones(n, bool)),
        "l_fd": _masked(l_jvp * (1 + nonlin), ok), "l_jvp": _masked(l_jvp, ok),
        "sigma": _masked(l_jvp, ok & (np.array(family) == "top")), "nonlinearity": _masked(nonlin, ok),
    })
    return cols


def _scale_png(seed: int, shift: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((SCALE_IMG, SCALE_IMG), Image.BILINEAR))
    return _png(np.clip(img.astype(np.int16) + shift, 0, 255))


def make_scale_run(root: Path, *, pairs: int = 75_000, pairs_per_unit: int = 500,
                   models: Sequence[str] = SCALE_MODELS, run_id: str = SCALE_RUN_ID,
                   seed: int = 0) -> Path:
    """Write the scale fixture under `root/<run_id>` with sweep.run.store.RunStore and return
    its path. `pairs` per probe, split evenly across `models`; each model's units alternate
    between the probe's two settings; one unit per probe of the last model failed (a units row
    with status error and no results); match and perturb units keep a gallery of 4 pairs."""
    from sweep.run.store import RunStore

    run_dir = Path(root) / run_id
    store = RunStore(run_dir)
    rng = np.random.default_rng(seed)
    per_model = max(1, pairs // len(models))
    n_units = max(1, -(-per_model // pairs_per_unit))
    settings = {"match": SCALE_MATCH_PARAMS, "perturb": SCALE_PERTURB_PARAMS,
                "lipschitz": SCALE_LIPSCHITZ_PARAMS}
    import datetime as dt

    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    done = failed = pairs_ok = pairs_error = 0
    for m, model in enumerate(models):
        for probe, options in settings.items():
            for u in range(n_units):
                k = u % len(options)
                params = options[k]
                unit_id = f"{_slug(model)}-{probe}-s{k}-{u:04d}"
                unit = {"run_id": run_id, "unit_id": unit_id, "model": model, "probe": probe,
                        "config_hash": _scale_hash(probe, params, model),
                        "params": json.dumps(params, sort_keys=True)}
                lo = u * pairs_per_unit
                idx = np.arange(lo, min(lo + pairs_per_unit, per_model), dtype=np.int64)
                unit_row = {"run_id": run_id, "unit_id": unit_id, "model": model, "weights": "timm",
                            "embed": "pre_logits", "probe": probe,
                            "config_hash": unit["config_hash"], "params": unit["params"],
                            "shard": f"imagenet-val-{u:06d}.tar", "attempts": 1,
                            "started_at": [start + dt.timedelta(seconds=30 * u)],
                            "finished_at": [start + dt.timedelta(seconds=30 * u + 28)],
                            "seconds": 28.0, "worker": f"worker-{u % 8}", "host": "node-0",
                            "device": "cuda:0"}
                if m == len(models) - 1 and u == n_units - 1:  # failed after its retries
                    unit_row.update(status="error", attempts=3, n_pairs=0, n_ok=0, n_error=0,
                                    error="WorkerCrashed: worker died 3 times (exit code 137)")
                    store.write_parquet(store.unit_file("units", probe, model, unit_id),
                                        _arrow("units", unit_row, 1))
                    failed += 1
                    continue
                if probe == "match":
                    cols = _scale_match(unit, idx, rng, m, paper=k == 1)
                elif probe == "perturb":
                    cols = _scale_perturb(unit, idx, rng, m)
                else:
                    cols = _scale_lipschitz(unit, idx, rng, m)
                result = _arrow(probe, cols, len(cols["status"]))
                status = np.asarray(cols["status"]).reshape(len(idx), -1)
                pair_ok = (status == "ok").all(axis=1)
                decode = ~pair_ok
                pair_cols, _ = _scale_ident(unit, idx, rng, 0.0)
                pair_cols.update(status=["ok" if k_ else "error" for k_ in pair_ok],
                                 error=[None if k_ else SCALE_ERRORS[0] for k_ in pair_ok],
                                 shard=unit_row["shard"])
                pair_cols.pop("params")
                tables = {probe: result, "pairs": _arrow("pairs", pair_cols, len(idx))}
                if probe in ("match", "perturb"):
                    kept = idx[:SCALE_IMAGES_PER_UNIT]
                    shift = 3 if probe == "match" else 2
                    tables["images"] = _arrow("images", {
                        "run_id": run_id, "unit_id": unit_id,
                        "pair_id": [f"p{int(i):06d}" for i in kept], "model": model, "probe": probe,
                        "variant": "" if probe == "match" else "eps=0.0157",
                        "src_png": [_scale_png(int(i)) for i in kept],
                        "adv_png": [_scale_png(int(i), shift) for i in kept],
                        "tgt_png": [_scale_png(int(i) + 100_000) for i in kept],
                    }, len(kept))
                unit_row.update(status="ok", n_pairs=len(idx), n_ok=int(pair_ok.sum()),
                                n_error=int(decode.sum()))
                tables["units"] = _arrow("units", unit_row, 1)
                store.write_unit_tables(probe, model, unit_id, tables)
                done += 1
                pairs_ok += int(pair_ok.sum())
                pairs_error += int(decode.sum())
    spec = (f"name: {run_id}\nmodels:\n" + "".join(f"  - name: {m}\n    weights: timm\n" for m in models)
            + "probes:\n  match: {preset: [default, paper]}\n  perturb: {norm: linf, steps: [10, 40]}\n"
            "  lipschitz: {top_k: 2, seed: [0, 1]}\nshards: imagenet-val/shard-{000000..000149}.tar\n")
    store.write_text("spec.yaml", spec)
    store.write_json("manifest.json", {
        "run_id": run_id, "spec_hash": "5ca1ab1e5ca1ab1e", "git_commit": "deadbeef",
        "versions": {"python": "3.11.0", "torch": "2.4.0", "timm": "1.0.15", "vitsweep": "0.1.0"},
        "devices": ["cuda:0"], "hostname": "node-0",
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T02:00:00+00:00"})
    store.write_json("progress.json", {
        "run_id": run_id, "state": "finished", "units_total": done + failed, "units_done": done,
        "units_failed": failed, "units_skipped": 0, "pairs_done": pairs_ok,
        "pairs_error": pairs_error, "pairs_per_s": 10.4, "elapsed_s": 7200.0, "eta_s": None,
        "started_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T02:00:00+00:00",
        "failures": []})
    return run_dir
