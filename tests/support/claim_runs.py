"""Run directories built to satisfy or to violate each claim, for the verdict tests.

`make_claims_run(root, mode)` writes `root/<run_id>/` through the engine's own writer
(`sweep.run.store.RunStore.write_unit_tables`, tables built by `sweep.schema.to_table`) for one
model `vit_v` (weights `random:0`), with one setting per probe, and returns (run_dir, rows): the
exact rows written, by table, so a test computes its expected answers from them in plain Python.

`mode` is "satisfy" (every claim clearly holds under analysis/criteria.yaml), "violate" (every
claim clearly fails) or "demo" (the demo's look: a random-init model whose matches succeed with a
median PSNR near 15.9 dB and SSIM near 0.19; the other claims as in "satisfy"). `n` pairs per
probe (40 by default: above the default min_n of 30, so the verdicts are decided by the
numbers; a small n gives inconclusive verdicts).

Known values (pair i of n, f = i / (n - 1) running over [0, 1]):

- match: success for every pair ("satisfy", "demo") or for every second pair ("violate": rate
  1/2 over 2n pairs, so that n pairs still succeed). PSNR 35 + 10 f dB and SSIM 0.95 + 0.04 f
  ("satisfy"), 15 + 1.8 f dB and 0.15 + 0.08 f ("demo"), 12 + 6 f dB and 0.2 + 0.2 f
  ("violate"); quant_success always ("satisfy") or every fourth pair ("violate", "demo").
  Labels: every seventh pair has the same head and k-NN label at source and target (left out of
  the overgeneralisation rates); of the rest, the matched image takes the target's label except
  every tenth pair ("satisfy", "demo"), or only every fifth pair ("violate").
- perturb (norm linf, eps 1/255 and 4/255): at 1/255 disp_over_pair 0.8 + 0.4 f and
  random_disp_over_pair 0.04 ("satisfy", "demo"), 0.1 + 0.05 f and 0.09 ("violate"); at 4/255
  four times those.
- lipschitz (h 0.1 and 1.0): top directions 0..1 with l_jvp 100 (1 + f) and 50 (1 + f), null
  directions 0..1 with 0.2 and 0.4 ("satisfy", "demo"), or 3 (1 + f), 1.5 (1 + f) and null 1, 2
  ("violate"); random directions 0..2 with 1, 2, 3. `null=False` writes no null directions.
- equivalence: every pair's match succeeds with path_target_end 0.05. "satisfy", "demo": walk
  radius 1 + f against a random walk's 0.2 (ratio 5 (1 + f)), path_target_max 0.05 (1 + 0.5 f)
  (every segment within 2x: linear); "violate": walk radius 1 against 1 + 0.1 f (ratio just
  under 1), path_target_max 0.05 (1 + 3 f) (linear only while f <= 1/3).
- shapes: the units record input_dim 192 and embed_dim 16 (a 16 x 192 map: the closed-form
  Gaussian reference 1 + sqrt(12) = 4.46 for sigma_1 over random and the L2 over-random ratio).
- control (`control=True`, the default): a `control:gaussian:vit_v` model (weights random:0)
  with the same perturb and lipschitz params: over-random ratio 2.85 at every eps (random
  displacement over pair 0.1, optimised 0.285) and sigma_1 over random 4.46 (top 8.92 and 4.46,
  random 1, 2, 3, null 0), as a Gaussian 16 x 192 map gets. Its claims rows come with the run;
  `CONTROL` names it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sweep.run.store import RunStore
from sweep.schema import to_table

MODEL = "vit_v"
CONTROL = "control:gaussian:vit_v"
INPUT_DIM, EMBED_DIM = 192, 16
WEIGHTS = "random:0"
EMBED = "pre_logits"
PARAMS = {"match": {"lr": 0.02, "max_steps": 100}, "perturb": {"norm": "linf", "steps": 5},
          "lipschitz": {"h": [0.1, 1.0], "top_k": 2}, "equivalence": {"walk_steps": 20}}
LINF_EPS = (1 / 255, 4 / 255)
HS = (0.1, 1.0)


def config_hash(probe: str, model: str = MODEL) -> str:
    return f"{probe}-{model}-cfg"


def _ident(probe: str, unit_id: str, i: int, run_id: str, model: str = MODEL) -> dict[str, Any]:
    return {"run_id": run_id, "unit_id": unit_id, "pair_id": f"p{i}", "src_key": f"src/{i:05d}",
            "tgt_key": f"tgt/{i:05d}", "src_label": i % 10, "tgt_label": 10 + i % 10,
            "model": model, "weights": WEIGHTS, "embed": EMBED, "probe": probe,
            "config_hash": config_hash(probe, model),
            "params": json.dumps(PARAMS[probe], sort_keys=True), "status": "ok", "error": None}


def _frac(i: int, n: int) -> float:
    return i / (n - 1) if n > 1 else 0.0


def _match_rows(mode: str, n: int, run_id: str) -> list[dict[str, Any]]:
    unit = f"{MODEL}-match-0"
    total = 2 * n if mode == "violate" else n
    rows = []
    for i in range(total):
        f = _frac(i, total)
        success = i % 2 == 0 if mode == "violate" else True
        psnr, ssim = {"satisfy": (35 + 10 * f, 0.95 + 0.04 * f),
                      "demo": (15 + 1.8 * f, 0.15 + 0.08 * f),
                      "violate": (12 + 6 * f, 0.2 + 0.2 * f)}[mode]
        quant = True if mode == "satisfy" else i % 4 == 0
        same = i % 7 == 0
        to_target = (i % 10 != 0) if mode in ("satisfy", "demo") else (i % 5 == 0)
        src, tgt = 100 + i % 50, (100 + i % 50) if same else 600 + i % 50
        adv = tgt if to_target else src
        rows.append({
            **_ident("match", unit, i, run_id),
            "success": success, "steps": 50 + i, "sq_l2": 0.01, "cos": 0.99 if success else 0.5,
            "rel_dist": 0.05 if success else 0.6, "rel_dist_start": 1.3, "cos_start": 0.1,
            "pix_l2": 1.0, "pix_linf": 0.2, "psnr": psnr, "ssim": ssim, "quant_success": quant,
            "quant_cos": 0.98, "quant_rel_dist": 0.06,
            "pred_src": src, "pred_tgt": tgt, "pred_adv": adv,
            "prob_src": 0.5, "prob_tgt": 0.5, "prob_adv": 0.5,
            "knn_src": src, "knn_tgt": tgt, "knn_adv": adv,
            "log_every": 5, "loss_trajectory": [1.0, 0.5],
        })
    return rows


def _perturb_rows(mode: str, n: int, run_id: str, model: str = MODEL) -> list[dict[str, Any]]:
    unit = f"{model}-perturb-0"
    rows = []
    for i in range(n):
        f = _frac(i, n)
        disp, rand = (0.1 + 0.05 * f, 0.09) if mode == "violate" else (0.8 + 0.4 * f, 0.04)
        if mode == "control":
            disp, rand = 0.285, 0.1
        for eps in LINF_EPS:
            scale = eps * 255
            rows.append({
                **_ident("perturb", unit, i, run_id, model), "norm": "linf", "eps": eps, "steps": 5,
                "emb_disp": disp * scale * 10, "rel_disp": disp * scale / 2,
                "disp_over_pair": disp * scale, "random_disp": rand * scale * 10,
                "random_rel_disp": rand * scale / 2, "random_disp_over_pair": rand * scale,
                "cos_after": 0.5, "pix_linf": eps, "pred_src": 1, "pred_adv": 2,
            })
    return rows


def _lipschitz_rows(mode: str, n: int, run_id: str, null: bool,
                    model: str = MODEL) -> list[dict[str, Any]]:
    unit = f"{model}-lipschitz-0"
    rows = []
    for i in range(n):
        f = _frac(i, n)
        if mode == "control":
            top, nul = (2 * 4.46, 4.46), (0.0, 0.0)
        elif mode == "violate":
            top, nul = (3 * (1 + f), 1.5 * (1 + f)), (1.0, 2.0)
        else:
            top, nul = (100 * (1 + f), 50 * (1 + f)), (0.2, 0.4)
        directions = [("top", d, v, v) for d, v in enumerate(top)]
        directions += [("random", d, v, None) for d, v in enumerate((1.0, 2.0, 3.0))]
        if null:
            directions += [("null", d, v, None) for d, v in enumerate(nul)]
        for family, d, l_jvp, sigma in directions:
            for h in HS:
                rows.append({**_ident("lipschitz", unit, i, run_id, model), "family": family,
                             "direction": d, "h": h, "l_fd": l_jvp, "l_jvp": l_jvp,
                             "sigma": sigma, "nonlinearity": 0.0})
    return rows


def _equivalence_rows(mode: str, n: int, run_id: str) -> list[dict[str, Any]]:
    unit = f"{MODEL}-equivalence-0"
    rows = []
    for i in range(n):
        f = _frac(i, n)
        walk, random_walk, target = ((1.0, 1.0 + 0.1 * f, 1 + 3 * f) if mode == "violate"
                                     else (1.0 + f, 0.2, 1 + 0.5 * f))
        rows.append({**_ident("equivalence", unit, i, run_id), "pair_dist": 1.0, "delta": 0.05,
                     "match_success": True, "path_points": 17, "path_target_max": 0.05 * target,
                     "path_target_end": 0.05, "walk_kept": 20, "walk_radius": walk,
                     "random_walk_kept": 20, "random_walk_radius": random_walk,
                     "walk_ratio": walk / random_walk})
    return rows


def _unit_row(probe: str, unit_id: str, n_pairs: int, run_id: str,
              model: str = MODEL) -> dict[str, Any]:
    start = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
    return {"run_id": run_id, "unit_id": unit_id, "model": model, "weights": WEIGHTS,
            "embed": EMBED, "probe": probe, "config_hash": config_hash(probe, model),
            "input_dim": INPUT_DIM, "embed_dim": EMBED_DIM,
            "params": json.dumps(PARAMS[probe], sort_keys=True), "shard": "shard-000000.tar",
            "status": "ok", "error": None, "attempts": 1, "n_pairs": n_pairs, "n_ok": n_pairs,
            "n_error": 0, "started_at": start, "finished_at": start + dt.timedelta(seconds=5),
            "seconds": 5.0, "worker": "worker-0", "host": "localhost", "device": "cpu"}


def make_claims_run(root: Path, mode: str = "satisfy", *, n: int = 40, null: bool = True,
                    run_id: str | None = None, control: bool = True
                    ) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """Write the run (see the module docstring) and return (run_dir, rows by table)."""
    assert mode in ("satisfy", "violate", "demo"), mode
    run_id = run_id or f"claims-{mode}"
    run_dir = Path(root) / run_id
    store = RunStore(run_dir)
    rows = {"match": _match_rows(mode, n, run_id), "perturb": _perturb_rows(mode, n, run_id),
            "lipschitz": _lipschitz_rows(mode, n, run_id, null),
            "equivalence": _equivalence_rows(mode, n, run_id)}
    for probe, result in rows.items():
        unit_id = result[0]["unit_id"]
        pairs = sorted({r["pair_id"] for r in result})
        store.write_unit_tables(probe, MODEL, unit_id, {
            probe: to_table(probe, result),
            "units": to_table("units", [_unit_row(probe, unit_id, len(pairs), run_id)]),
        })
    if control:
        for probe, result in (("perturb", _perturb_rows("control", n, run_id, CONTROL)),
                              ("lipschitz", _lipschitz_rows("control", n, run_id, null, CONTROL))):
            unit_id = result[0]["unit_id"]
            store.write_unit_tables(probe, CONTROL, unit_id, {
                probe: to_table(probe, result),
                "units": to_table("units", [_unit_row(probe, unit_id, n, run_id, CONTROL)]),
            })
    store.write_text("spec.yaml", f"name: {run_id}\nmodels:\n  - name: {MODEL}\n")
    store.write_json("manifest.json", {"run_id": run_id, "started_at": "2024-01-01T12:00:00+00:00",
                                       "finished_at": "2024-01-01T12:01:00+00:00"})
    return run_dir, rows
