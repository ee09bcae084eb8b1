"""Every named query against answers worked out by hand on a small, lopsided fixture.

The fixture's values are chosen so that the usual slips give a different number: medians differ
from means (so `avg` for `median` shows), quantiles are interpolated, a success filter changes
every pixel statistic, a missing l_jvp falls back to l_fd at the smallest h, unlabelled k-NN
entries are left out of shares, and two match settings of one model must not be pooled. The
expected values are written out as literals, each with the arithmetic that gives it.

Parameter handling of the loader: `NULL`, `null`, `Null` and the empty string all mean "all".
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from analysis.db import open_runs
from analysis.named import (
    NamedQuery,
    Param,
    UnknownQuery,
    bind_params,
    get_named,
    list_named,
    parse_query_file,
    run_named,
    run_named_arrow,
)
from sweep.schema import partition_dir, to_table

RUN, MODEL, WEIGHTS, EMBED = "h-run", "m", "w", "pre_logits"
CM, CM2, CP, CL, CE = "cfg-match-1", "cfg-match-2", "cfg-perturb", "cfg-lip", "cfg-eq"
PARAMS = {CM: {"lr": 0.1}, CM2: {"lr": 0.5}, CP: {"steps": 3}, CL: {"h": [0.1, 1.0]}, CE: {"walk_steps": 5}}
PROBE = {CM: "match", CM2: "match", CP: "perturb", CL: "lipschitz", CE: "equivalence"}


def _ident(unit: str, cfg: str, pair: str, error: str | None = None) -> dict[str, Any]:
    return {"run_id": RUN, "unit_id": unit, "pair_id": pair, "src_key": f"s/{pair}", "tgt_key": f"t/{pair}",
            "src_label": 1, "tgt_label": 2, "model": MODEL, "weights": WEIGHTS, "embed": EMBED,
            "probe": PROBE[cfg], "config_hash": cfg, "params": json.dumps(PARAMS[cfg]),
            "status": "ok" if error is None else "error", "error": error}


# match, setting CM: pairs a..d ok (c failed to match), e in error.
#          success steps rel  start cos  psnr ssim linf l2 quant qrel  adv knn(src,tgt,adv) trajectory
_M1 = {
    "a": (True, 10, 0.1, 1.0, 0.9, 40.0, 0.99, 2, 1.0, True, 0.11, 2, (5, 6, 6), [3.0, 2.0, 1.0]),
    "b": (True, 20, 0.2, 2.0, 0.8, 34.0, 0.90, 4, 2.0, False, 0.50, 1, (5, 6, None), None),
    "c": (False, 90, 0.9, 3.0, 0.1, 10.0, 0.10, 50, 9.0, False, 0.95, 3, (5, 6, 6), [9.0, 8.0]),
    "d": (True, 60, 0.3, 10.0, 0.7, 19.0, 0.60, 9, 6.0, True, 0.31, 2, (5, 6, 5), [4.0]),
}


def _match_rows() -> list[dict[str, Any]]:
    rows = []
    for pair, (succ, steps, rel, start, cos, psnr, ssim, linf, l2, quant, qrel, adv, knn, traj) in _M1.items():
        rows.append({**_ident("u-match", CM, pair), "success": succ, "steps": steps, "rel_dist": rel,
                     "rel_dist_start": start, "cos": cos, "psnr": psnr, "ssim": ssim, "pix_linf": linf / 255,
                     "pix_l2": l2, "quant_success": quant, "quant_rel_dist": qrel, "pred_src": 1, "pred_tgt": 2,
                     "pred_adv": adv, "knn_src": knn[0], "knn_tgt": knn[1], "knn_adv": knn[2],
                     "log_every": 10, "loss_trajectory": traj})
    rows.append(_ident("u-match", CM, "e", "ImageDecodeError: bad"))
    # the second setting: two ok pairs, neither matched
    for pair, rel in (("a", 0.6), ("b", 0.8)):
        rows.append({**_ident("u-match2", CM2, pair), "success": False, "steps": 100, "rel_dist": rel,
                     "rel_dist_start": 1.0, "cos": 0.5, "psnr": 15.0, "ssim": 0.5, "pix_linf": 0.1,
                     "pix_l2": 5.0, "quant_success": False, "quant_rel_dist": rel, "pred_src": 1, "pred_tgt": 2,
                     "pred_adv": 1})
    return rows


# perturb: pairs a, b, c ok, d in error; one linf and one l2 eps.
#                 disp_over_pair   random_dop        rel_disp           random_rel          cos_after     pred_adv
_P = {
    ("linf", 1 / 255): ((0.1, 0.2, 0.9), (0.05, 0.05, 0.1), (0.01, 0.02, 0.3), (0.005, 0.004, 0.1),
                        (0.99, 0.9, 0.5), (1, 2, 1)),
    ("l2", 0.5): ((0.3, 0.3, 0.6), (0.1, 0.1, 0.1), (0.1, 0.1, 0.1), (0.01, 0.01, 0.01),
                  (0.8, 0.8, 0.8), (1, 1, 1)),
}


def _perturb_rows() -> list[dict[str, Any]]:
    rows = []
    for (norm, eps), (dop, rdop, rel, rrel, cos, adv) in _P.items():
        for i, pair in enumerate("abc"):
            rows.append({**_ident("u-pert", CP, pair), "norm": norm, "eps": eps, "steps": 3,
                         "disp_over_pair": dop[i], "random_disp_over_pair": rdop[i], "rel_disp": rel[i],
                         "random_rel_disp": rrel[i], "cos_after": cos[i], "pred_src": 1, "pred_adv": adv[i]})
    rows.append(_ident("u-pert", CP, "d", "RuntimeError: oom"))
    return rows


# lipschitz: pairs a, b ok, c in error; (family, direction) -> l_jvp (sigma = l_jvp for top).
# b's random direction 2 has no l_jvp: its estimate is l_fd at the smallest h (4 at h = 0.1; 100 at h = 1).
_L = {
    "a": {("top", 0): 40.0, ("top", 1): 10.0, ("random", 0): 1.0, ("random", 1): 2.0, ("random", 2): 9.0,
          ("null", 0): 0.5, ("null", 1): 1.5, ("match", 0): 3.0},
    "b": {("top", 0): 60.0, ("top", 1): 20.0, ("random", 0): 3.0, ("random", 1): 5.0, ("random", 2): None,
          ("null", 0): 2.0, ("null", 1): 6.0, ("match", 0): 10.0},
}
HS = (0.1, 1.0)


def _lipschitz_rows() -> list[dict[str, Any]]:
    rows = []
    for pair, dirs in _L.items():
        for (family, direction), l_jvp in dirs.items():
            for h in HS:
                if l_jvp is None:
                    l_fd, nonlin = (4.0 if h == 0.1 else 100.0), None
                else:
                    l_fd, nonlin = l_jvp * (1 + h), h * (direction + 1) ** 2
                rows.append({**_ident("u-lip", CL, pair), "family": family, "direction": direction, "h": h,
                             "l_jvp": l_jvp, "l_fd": l_fd, "nonlinearity": nonlin,
                             "sigma": l_jvp if family == "top" else None})
    rows.append(_ident("u-lip", CL, "c", "ValueError: nan"))
    return rows


# spectrum (unit u-lip): pair a sigmas 4, 2, 1, 1 (rank 4); b 3, 0 (rank 1)
_S = {"a": [4.0, 2.0, 1.0, 1.0], "b": [3.0, 0.0]}


def _spectrum_rows() -> list[dict[str, Any]]:
    return [{**_ident("u-lip", CL, pair), "jacobian": "fp32", "rank": sum(v > 0 for v in values) if pair == "b" else 4,
             "n_values": len(values), "singular_values": values} for pair, values in _S.items()]


# equivalence (unit u-eq): pair a walk 4 vs random 2 (ratio 2), b 3 vs 0 (inf), c 0 vs 0 (1);
# path: a success, target max 0.1 at end 0.05 (2x: linear), b success 0.3 at 0.1 (3x: not), c failed
def _equivalence_rows() -> list[dict[str, Any]]:
    values = {"a": (4.0, 2.0, True, 0.1, 0.05), "b": (3.0, 0.0, True, 0.3, 0.1), "c": (0.0, 0.0, False, None, None)}
    return [{**_ident("u-eq", CE, pair), "pair_dist": 1.0, "walk_radius": w, "random_walk_radius": r,
             "match_success": ok, "path_target_max": tmax, "path_target_end": tend}
            for pair, (w, r, ok, tmax, tend) in values.items()]


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(run: Path, table: str, rows: list[dict[str, Any]]) -> None:
    by_unit: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_unit.setdefault((row["probe"], row["unit_id"]), []).append(row)
    for (probe, unit), group in by_unit.items():
        folder = run / partition_dir(table, probe, MODEL)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_table(table, group), folder / f"{unit}.parquet")


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("hand") / RUN
    results = {"match": _match_rows(), "perturb": _perturb_rows(), "lipschitz": _lipschitz_rows(),
               "equivalence": _equivalence_rows()}
    for table, rows in results.items():
        _write(run, table, rows)
    _write(run, "spectrum", _spectrum_rows())
    pairs = {}
    for rows in results.values():
        for r in rows:
            pairs.setdefault((r["unit_id"], r["pair_id"]), {
                k: r[k] for k in ("run_id", "unit_id", "pair_id", "src_key", "tgt_key", "model", "weights",
                                  "embed", "probe", "config_hash", "status", "error")})
    _write(run, "pairs", list(pairs.values()))
    units = [{"run_id": RUN, "unit_id": u, "model": MODEL, "weights": WEIGHTS, "embed": EMBED, "probe": PROBE[c],
              "config_hash": c, "params": json.dumps(PARAMS[c]), "status": "ok", "seconds": s}
             for u, c, s in (("u-match", CM, 5.0), ("u-match2", CM2, 7.0), ("u-pert", CP, 11.0),
                             ("u-lip", CL, 13.0), ("u-eq", CE, 17.0))]
    units.append({"run_id": RUN, "unit_id": "u-pert-fail", "model": MODEL, "weights": WEIGHTS, "embed": EMBED,
                  "probe": "perturb", "config_hash": CP, "params": json.dumps(PARAMS[CP]), "status": "error",
                  "error": "WorkerCrashed: died"})
    _write(run, "units", units)
    images = [{"run_id": RUN, "unit_id": "u-match", "pair_id": p, "model": MODEL, "probe": "match", "variant": "",
               "src_png": _png(10 * i), "adv_png": _png(10 * i + 1), "tgt_png": _png(200)}
              for i, p in enumerate("ab")]
    images.append({"run_id": RUN, "unit_id": "u-pert", "pair_id": "a", "model": MODEL, "probe": "perturb",
                   "variant": "eps=0.0039", "src_png": _png(1), "adv_png": _png(2), "tgt_png": None})
    _write(run, "images", images)
    return open_runs([run])


def one(df, **where) -> dict[str, Any]:
    rows = [r for r in df.to_dict("records") if all(r[k] == v for k, v in where.items())]
    assert len(rows) == 1, (where, df)
    return rows[0]


def approx(row: dict[str, Any], **expected: float | None) -> None:
    for key, value in expected.items():
        got = row[key]
        if value is None:
            assert got is None or (isinstance(got, float) and math.isnan(got)), (key, got)
        else:
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (key, got, value)


# ---------------------------------------------------------------------------------- match queries
def test_equivalence(con) -> None:
    df = run_named(con, "equivalence")
    assert df["config_hash"].tolist() == [CM, CM2]  # two settings, never pooled
    assert df["setting"].tolist() == ["lr=0.1", "lr=0.5"]
    row = one(df, config_hash=CM)
    assert (row["n_ok"], row["n_error"], row["n_success"]) == (4, 1, 3)
    approx(row,
           success_rate=3 / 4,
           mean_steps=(10 + 20 + 90 + 60) / 4,  # 45
           median_steps_success=20,  # successes 10, 20, 60 (the mean would be 30)
           max_steps=90,
           median_rel_dist=(0.2 + 0.3) / 2,  # 0.1 0.2 | 0.3 0.9 (the mean would be 0.375)
           mean_rel_dist=1.5 / 4,
           median_rel_dist_start=(2.0 + 3.0) / 2,
           median_cos=(0.7 + 0.8) / 2,
           mean_cos=2.5 / 4)
    assert json.loads(row["params"]) == PARAMS[CM] and row["embed"] == EMBED and row["weights"] == WEIGHTS
    other = one(df, config_hash=CM2)
    assert (other["n_ok"], other["n_error"], other["n_success"]) == (2, 0, 0)
    approx(other, success_rate=0.0, median_steps_success=None, median_rel_dist=0.7)


def test_invisibility_counts_successes_only(con) -> None:
    df = run_named(con, "invisibility")
    assert df["config_hash"].tolist() == [CM]  # CM2 has no successful match
    approx(one(df, config_hash=CM),
           n_success=3,  # a, b, d
           median_psnr=34.0, mean_psnr=(40 + 34 + 19) / 3, min_psnr=19.0,
           median_ssim=0.9, mean_ssim=(0.99 + 0.9 + 0.6) / 3,
           median_pix_linf=4 / 255, max_pix_linf=9 / 255, median_pix_linf_255=4.0,
           median_pix_l2=2.0,
           quant_success_rate=2 / 3, n_quant_success=2,
           median_quant_rel_dist=0.31)


def test_overgeneralisation_shares(con) -> None:
    row = one(run_named(con, "overgeneralisation"), config_hash=CM)
    approx(row,
           n_ok=4, n_success=3,
           head_target_rate_success=2 / 3,  # a, d of a, b, d
           head_target_rate_all=2 / 4,  # a, d of a, b, c, d
           head_source_rate_success=1 / 3,  # b
           n_head_labelled_success=3,
           knn_target_rate_success=1 / 2,  # a yes, d no; b unlabelled is left out
           knn_target_rate_all=2 / 3,  # a, c of a, c, d
           knn_source_rate_success=1 / 2,  # d
           n_knn_labelled_success=2)


def test_match_pairs_and_loss_curves(con) -> None:
    pairs = run_named(con, "match_pairs")
    assert list(zip(pairs["config_hash"], pairs["pair_id"])) == [(CM, p) for p in "abcd"] + [(CM2, "a"), (CM2, "b")]
    assert pairs["rel_dist"].tolist()[:4] == [0.1, 0.2, 0.9, 0.3]
    assert pairs["knn_adv"].isna().tolist()[:4] == [False, True, False, False]
    curves = run_named(con, "loss_curves")
    assert curves["pair_id"].tolist() == ["a", "c", "d"]  # b and CM2 have no trajectory
    assert [list(t) for t in curves["loss_trajectory"]] == [[3.0, 2.0, 1.0], [9.0, 8.0], [4.0]]
    assert run_named(con, "loss_curves", {"limit": "2"})["pair_id"].tolist() == ["a", "c"]


def test_gallery(con) -> None:
    g = run_named(con, "gallery")
    assert g["pair_id"].tolist() == ["a", "b"] and set(g["probe"]) == {"match"}
    assert g["config_hash"].tolist() == [CM, CM] and g["success"].tolist() == [True, True]
    assert g["rel_dist"].tolist() == [0.1, 0.2]
    assert bytes(g["adv_png"].iloc[1]) == _png(11)
    assert run_named(con, "gallery", {"limit": "1"})["pair_id"].tolist() == ["a"]
    p = run_named(con, "gallery", {"probe": "perturb"})
    assert p["pair_id"].tolist() == ["a"] and p["config_hash"].tolist() == [CP]  # from the unit's rows
    assert p["variant"].tolist() == ["eps=0.0039"] and p["tgt_png"].isna().all()


# ---------------------------------------------------------------------------------- perturb
def test_normal_space(con) -> None:
    df = run_named(con, "normal_space")
    assert list(zip(df["norm"], df["eps"])) == [("l2", 0.5), ("linf", 1 / 255)]
    approx(one(df, norm="linf"),
           eps_255=1.0, n=3,
           median_disp_over_pair=0.2, mean_disp_over_pair=1.2 / 3,
           p10_disp_over_pair=0.1 + 0.2 * (0.2 - 0.1),  # position 0.2 between 0.1 and 0.2
           p90_disp_over_pair=0.2 + 0.8 * (0.9 - 0.2),  # position 1.8 between 0.2 and 0.9
           median_random_disp_over_pair=0.05, mean_random_disp_over_pair=0.2 / 3,
           median_over_random=4.0,  # per row 2, 4, 9
           median_rel_disp=0.02, median_random_rel_disp=0.005,
           median_cos_after=0.9, label_change_rate=1 / 3)
    approx(one(df, norm="l2"), eps_255=127.5, n=3, median_disp_over_pair=0.3, mean_disp_over_pair=0.4,
           p90_disp_over_pair=0.3 + 0.8 * 0.3, median_over_random=3.0, label_change_rate=0.0)
    assert run_named(con, "normal_space", {"norm": "l2"})["norm"].tolist() == ["l2"]


# ---------------------------------------------------------------------------------- lipschitz
def test_lipschitz_pairs(con) -> None:
    df = run_named(con, "lipschitz_pairs")
    assert df["pair_id"].tolist() == ["a", "b"]
    approx(one(df, pair_id="a"), sigma1=40.0, median_random=2.0, sigma1_over_random=20.0, median_top=25.0,
           median_null=1.0, top_over_null=25.0, median_match=3.0, match_over_random=1.5,
           n_top=2, n_random=3, n_null=2)
    # b: random estimates 3, 5 and 4 (l_fd at h = 0.1 where l_jvp is missing), so the median is 4
    approx(one(df, pair_id="b"), sigma1=60.0, median_random=4.0, sigma1_over_random=15.0, median_top=40.0,
           median_null=4.0, top_over_null=10.0, median_match=10.0, match_over_random=2.5, n_random=3)


def test_lipschitz(con) -> None:
    (row,) = run_named(con, "lipschitz").to_dict("records")
    approx(row, n_pairs=2,
           median_sigma1_over_random=(20 + 15) / 2,
           geomean_sigma1_over_random=math.sqrt(20 * 15),
           min_sigma1_over_random=15.0, max_sigma1_over_random=20.0,
           median_top_over_null=(25 + 10) / 2, min_top_over_null=10.0,
           median_match_over_random=(1.5 + 2.5) / 2)
    assert row["setting"] == "h=[0.1,1.0]" and row["config_hash"] == CL


def test_lipschitz_families(con) -> None:
    df = run_named(con, "lipschitz_families")
    assert df["family"].tolist() == ["match", "null", "random", "top"]
    # random: 1 2 3 4 5 9 -> quartile positions 1.25 and 3.75 (the mean would be 4)
    approx(one(df, family="random"), n_directions=6, min_estimate=1.0, p25_estimate=2.25, median_estimate=3.5,
           p75_estimate=4.75, max_estimate=9.0)
    # top: 10 20 40 60
    approx(one(df, family="top"), n_directions=4, min_estimate=10.0, p25_estimate=17.5, median_estimate=30.0,
           p75_estimate=45.0, max_estimate=60.0)
    approx(one(df, family="null"), n_directions=4, median_estimate=1.75)
    approx(one(df, family="match"), n_directions=2, median_estimate=6.5)


def test_lipschitz_directions(con) -> None:
    df = run_named(con, "lipschitz_directions")
    assert len(df) == 16  # 2 pairs x 8 directions, one row each whatever the number of h
    approx(one(df, pair_id="b", family="random", direction=2), estimate=4.0, sigma=None)
    approx(one(df, pair_id="a", family="top", direction=1), estimate=10.0, sigma=10.0)
    top = run_named(con, "lipschitz_directions", {"family": "top"})
    assert sorted(top["estimate"]) == [10.0, 20.0, 40.0, 60.0]


def test_nonlinearity(con) -> None:
    df = run_named(con, "nonlinearity")
    assert len(df) == 4 * 2  # family x h
    # random at h = 0.1, h (d + 1)^2: a 0.1, 0.4, 0.9 and b 0.1, 0.4 (b's direction 2 has none); 6 rows
    approx(one(df, family="random", h=0.1), n=6, median_nonlinearity=0.4, mean_nonlinearity=1.9 / 5,
           max_nonlinearity=0.9,
           median_l_fd=(3.3 + 4.0) / 2)  # l_fd 1.1 2.2 9.9 3.3 5.5 4 -> 3.3 | 4
    approx(one(df, family="top", h=1.0), n=4, median_nonlinearity=2.5, max_nonlinearity=4.0,
           median_l_fd=(40.0 + 80.0) / 2)  # l_fd 80 20 120 40 -> 40 | 80


# ---------------------------------------------------------------------------------- run state
def test_overview(con) -> None:
    df = run_named(con, "overview")
    assert df["probe"].tolist() == ["equivalence", "lipschitz", "match", "match", "perturb"]
    expect = {  # units, ok, error, in progress, pairs ok, pairs error, rows ok, rows error, seconds
        CL: (1, 1, 0, 0, 2, 1, 32, 1, 13.0),
        CM: (1, 1, 0, 0, 4, 1, 4, 1, 5.0),
        CM2: (1, 1, 0, 0, 2, 0, 2, 0, 7.0),
        CP: (2, 1, 1, 0, 3, 1, 6, 1, 11.0),
        CE: (1, 1, 0, 0, 3, 0, 3, 0, 17.0),
    }
    cols = ["units", "units_ok", "units_error", "units_in_progress", "pairs_ok", "pairs_error", "rows_ok",
            "rows_error", "unit_seconds"]
    for cfg, want in expect.items():
        row = one(df, config_hash=cfg)
        assert tuple(row[c] for c in cols) == want, cfg
    assert run_named(con, "overview", {"probe": "match"})["config_hash"].tolist() == [CM, CM2]


def test_failures(con) -> None:
    df = run_named(con, "failures")
    df = df.astype(object).where(df.notna(), None)
    got = list(zip(df["kind"], df["probe"], df["unit_id"], df["pair_id"], df["error"], df["config_hash"]))
    assert got == [
        ("unit", "perturb", "u-pert-fail", None, "WorkerCrashed: died", CP),
        ("pair", "lipschitz", "u-lip", "c", "ValueError: nan", CL),
        ("pair", "match", "u-match", "e", "ImageDecodeError: bad", CM),
        ("pair", "perturb", "u-pert", "d", "RuntimeError: oom", CP),
    ]
    assert run_named(con, "failures", {"probe": "match"})["pair_id"].tolist() == ["e"]
    assert run_named(con, "failures", {"config_hash": CP})["unit_id"].tolist() == ["u-pert-fail", "u-pert"]


# ---------------------------------------------------------------------------------- parameters
def test_spectrum(con) -> None:
    df = run_named(con, "spectrum", {"k": "2"})
    # a: p = (1/2, 1/4, 1/8, 1/8), entropy 1.75 ln 2 -> effective rank 2^1.75; stable rank (16+4+1+1)/16
    approx(one(df, pair_id="a"), sigma1=4.0, effective_rank=2**1.75, stable_rank=22 / 16, sigma_k_over_sigma1=0.5,
           sigma_min_over_sigma1=0.25)
    # b: one nonzero sigma: effective rank 1 (zeros left out of the entropy), stable rank 1
    approx(one(df, pair_id="b"), sigma1=3.0, effective_rank=1.0, stable_rank=1.0, sigma_k_over_sigma1=0.0)
    assert one(df, pair_id="a")["rank"] == 4 and one(df, pair_id="b")["n_values"] == 2
    # k past the last singular value: NULL
    approx(one(run_named(con, "spectrum"), pair_id="b"), sigma_k_over_sigma1=None)


def test_geometry(con) -> None:
    g = one(run_named(con, "geometry"), config_hash=CE)
    # walk radii 4, 3, 0 (median 3), random 2, 0, 0 (median 0); ratios 2, inf, 1: median 2
    approx(g, pairs=3, walks=3, median_walk_radius=3.0, median_random_walk_radius=0.0,
           median_walk_ratio=2.0, matches=2)
    # target over end: a 0.1 / 0.05 = 2, b 0.3 / 0.1 = 3 (c failed its match): median 2.5
    approx(g, median_target_over_end=2.5, median_path_target_max=0.2)


def test_geometry_verdicts_in_claims(con) -> None:
    df = run_named(con, "claims")
    large = one(df, claim="large_equivalence")
    # ratios sorted 1 (c: neither moved), 2 (a), inf (b): median 2, n 3 < min_n: inconclusive
    approx(large, estimate=2.0)
    assert large["n"] == 3 and large["verdict"] == "inconclusive" and large["config_hash"] == CE
    linear = one(df, claim="piecewise_linear")
    # a: 0.1 <= 2 x 0.05 (linear), b: 0.3 > 2 x 0.1; c failed its match: n 2, share 1/2
    approx(linear, estimate=0.5)
    assert linear["n"] == 2 and linear["probe"] == "equivalence"


def test_every_query_has_a_hand_checked_answer_here() -> None:
    tested = {"equivalence", "invisibility", "overgeneralisation", "match_pairs", "loss_curves", "gallery",
              "normal_space", "lipschitz_pairs", "lipschitz", "lipschitz_families", "lipschitz_directions",
              "nonlinearity", "overview", "failures",
              "claims",  # claims: verdicts against plain-Python answers in tests/analysis/test_claims.py
              "transfer",  # transfer: brute force and identical models in tests/finished/test_transfer.py
              "spectrum", "geometry"}
    assert {q.name for q in list_named()} <= tested, "a new named query needs its hand-checked test"


@pytest.mark.parametrize("name", [q.name for q in list_named()])
def test_null_in_any_case_or_empty_means_all(con, name: str) -> None:
    query = get_named(name)
    nullable = [p.name for p in query.params if p.default is None]
    assert nullable, name
    want = run_named(con, name)
    assert len(want) > 0 or name == "transfer", name  # the fixture has no transfer pass
    for spelling in ("NULL", "null", "Null", "", "  null  "):
        got = run_named(con, name, {p: spelling for p in nullable})
        assert got.equals(want), (name, spelling)
    # and a real value filters: a model that does not exist leaves nothing
    assert run_named(con, name, {"model": "no-such-model"}).empty, name


def test_run_named_arrow_matches_the_dataframe(con) -> None:
    table = run_named_arrow(con, "match_pairs", {"config_hash": CM2})
    assert isinstance(table, pa.Table) and table.column("pair_id").to_pylist() == ["a", "b"]
    assert table.column("rel_dist").to_pylist() == [0.6, 0.8]


# ---------------------------------------------------------------------------------- the .sql loader
def test_parse_query_file_reads_the_header(tmp_path: Path) -> None:
    path = tmp_path / "demo_q.sql"
    path.write_text(
        "-- description:  Something useful.  \n"
        "-- param: model = NULL | only this model\n"
        "-- param: limit = 5\n"
        "--param:flag=null|lowercase null is SQL NULL too\n"
        "-- A note line.\n"
        "--Xtra note (leading dashes go, letters stay).\n"
        "SELECT $model, $limit, $flag\n"
        "-- param: late = 1 | after the SQL starts: not a parameter\n"
    )
    query = parse_query_file(path)
    assert query.name == "demo_q" and query.description == "Something useful."
    assert query.params == (Param("model", None, "only this model"), Param("limit", "5", ""),
                            Param("flag", None, "lowercase null is SQL NULL too"))
    assert query.notes == "A note line. Xtra note (leading dashes go, letters stay)."
    assert query.sql == path.read_text() and query.path == path
    assert query.param_names == ("model", "limit", "flag")
    assert query.defaults() == {"model": None, "limit": "5", "flag": None}


def test_parse_query_file_needs_a_description(tmp_path: Path) -> None:
    path = tmp_path / "nodesc.sql"
    path.write_text("-- param: model = NULL\nSELECT 1\n-- description: too late\n")
    with pytest.raises(ValueError, match=r"^nodesc\.sql: no '-- description:' line"):
        parse_query_file(path)


def test_bind_params_defaults_overrides_and_unknowns() -> None:
    query = NamedQuery("q", "d", (Param("model", None), Param("limit", "8")), "SELECT 1")
    assert bind_params(query, None) == {"model": None, "limit": "8"}
    assert bind_params(query, {"model": "  vit  ", "limit": "null"}) == {"model": "vit", "limit": None}
    assert bind_params(query, {"limit": ""}) == {"model": None, "limit": None}
    with pytest.raises(ValueError, match=r"named query 'q' has no parameter colour, size; its parameters: model, limit"):
        bind_params(query, {"size": "1", "colour": "red"})
    bare = NamedQuery("bare", "d", (), "SELECT 1")
    with pytest.raises(ValueError, match="its parameters: none"):
        bind_params(bare, {"x": "1"})


def test_unknown_query_names_the_known_ones() -> None:
    with pytest.raises(UnknownQuery) as info:
        get_named("nope")
    message = str(info.value)
    assert message.startswith("unknown named query 'nope'; known: ")
    assert message.removeprefix("unknown named query 'nope'; known: ").split(", ") == [q.name for q in list_named()]
    assert [q.name for q in list_named()] == sorted(q.name for q in list_named())
    assert get_named("equivalence").path.name == "equivalence.sql"
