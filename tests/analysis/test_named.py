"""Named queries: every one runs on fixture runs; the key ones equal answers computed in plain
Python over the rows the fixture wrote."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.db import open_runs
from analysis.named import UnknownQuery, list_named, run_named, run_named_arrow
from tests.support.runs import (
    LIPSCHITZ_SETTING_TEXT,
    MATCH_PARAMS,
    MATCH_SETTING_TEXT,
    PERTURB_SETTING_TEXT,
    config_hash,
    fixture_rows,
    make_fixture_run,
)

MODELS = ("vit_a", "vit_b")
# (model, match setting) of the fixture: vit_a ran match with two settings, vit_b with one.
MATCH_SETTINGS = (("vit_a", "default"), ("vit_a", "paper"), ("vit_b", "default"))
AGGREGATES = ("equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz",
              "lipschitz_families", "nonlinearity", "overview")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "complete": make_fixture_run(root / "c"),
        "partial": make_fixture_run(root / "p", complete=False),
        "match_only": make_fixture_run(root / "m", only=("match",)),
        "other_weights": make_fixture_run(root / "w", models=("vit_a",), run_id="w-run",
                                          weights="timm:in1k"),
        "geometry": make_fixture_run(root / "g", run_id="g-run", geometry=True),
    }


@pytest.fixture(scope="module")
def con(runs):
    return open_runs([runs["complete"]])


ROWS = fixture_rows(MODELS)


def ok_rows(table: str, model: str, setting: str = "default") -> list[dict[str, Any]]:
    cfg = config_hash(model, table, setting)
    return [r for r in ROWS[table]
            if r["model"] == model and r["config_hash"] == cfg and r["status"] == "ok"]


def by_model(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Rows of a query with one row per model (one setting per model): keyed by model."""
    assert df["model"].is_unique, df[["model", "config_hash"]]
    return {row["model"]: row for row in df.to_dict("records")}


def by_setting(df: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of a match query keyed by (model, fixture setting name), via config_hash."""
    names = {config_hash(m, "match", s): (m, s) for m, s in MATCH_SETTINGS}
    out = {names[row["config_hash"]]: row for row in df.to_dict("records")}
    assert len(out) == len(df), "one row per (model, setting)"
    return out


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


GEOMETRY_QUERIES = {"geometry"}  # over probe `equivalence`: rows in the `geometry` fixture run


def test_every_named_query_runs_on_every_fixture(runs) -> None:
    names = [q.name for q in list_named()]
    assert {"equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz",
            "nonlinearity", "overview", "failures"} <= set(names)
    for kind, run in runs.items():
        con = open_runs([run])
        for query in list_named():
            df = run_named(con, query.name, {})
            assert isinstance(df, pd.DataFrame), (kind, query.name)
            if query.name == "transfer":  # the fixtures have no transfer pass
                pass
            elif kind == "complete" or (kind == "geometry" and query.name in GEOMETRY_QUERIES):
                assert len(df) > 0 or query.name in GEOMETRY_QUERIES and kind == "complete", (kind, query.name)
            run_named_arrow(con, query.name, {})


def test_headers_declare_exactly_the_bound_parameters(con) -> None:
    for query in list_named():
        assert query.description, query.name
        statement = con.extract_statements(query.sql)
        assert len(statement) == 1, query.name
        used = set(statement[0].named_parameters)
        assert used == set(query.param_names), query.name
        assert "{" not in query.sql, f"{query.name}: no format placeholders in SQL"


def test_every_query_reports_the_setting(con) -> None:
    """Every named query returns the probe setting (config_hash and its readable text) and takes
    a config_hash filter; the aggregate ones also return the setting's params JSON."""
    for query in list_named():
        assert "config_hash" in query.param_names, query.name
        df = run_named(con, query.name, {})
        assert {"setting", "config_hash"} <= set(df.columns), query.name
        assert df["setting"].notna().all() and (df["setting"] != "").all(), query.name
        if query.name in AGGREGATES and query.name != "overview":
            assert "params" in df.columns and "embed" in df.columns, query.name


def test_settings_view(con) -> None:
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT config_hash, probe, model, setting, params FROM settings").fetchall()}
    want = {config_hash(m, "match", s): ("match", m, MATCH_SETTING_TEXT[s]) for m, s in MATCH_SETTINGS}
    want |= {config_hash(m, "perturb"): ("perturb", m, PERTURB_SETTING_TEXT) for m in MODELS}
    want |= {config_hash(m, "lipschitz"): ("lipschitz", m, LIPSCHITZ_SETTING_TEXT) for m in MODELS}
    assert {k: v[:3] for k, v in got.items()} == want
    assert json.loads(got[config_hash("vit_a", "match", "paper")][3]) == MATCH_PARAMS["paper"]


def test_equivalence(con) -> None:
    df = run_named(con, "equivalence", {})
    got = by_setting(df)
    assert list(got) == list(MATCH_SETTINGS)  # ordered by model, then setting text
    for (model, setting), row in got.items():
        rows = ok_rows("match", model, setting)
        errors = [r for r in ROWS["match"] if r["config_hash"] == row["config_hash"]
                  and r["status"] == "error"]
        assert row["setting"] == MATCH_SETTING_TEXT[setting]
        assert json.loads(row["params"]) == MATCH_PARAMS[setting]
        assert row["embed"] == "pre_logits" and row["weights"] == "random:0"
        assert row["n_ok"] == len(rows) == 4 and row["n_error"] == len(errors)
        assert row["success_rate"] == pytest.approx(mean(r["success"] for r in rows))
        assert row["mean_steps"] == pytest.approx(mean(r["steps"] for r in rows))
        assert row["median_rel_dist"] == pytest.approx(statistics.median(r["rel_dist"] for r in rows))
        assert row["mean_cos"] == pytest.approx(mean(r["cos"] for r in rows))
        assert row["median_steps_success"] == pytest.approx(
            statistics.median(r["steps"] for r in rows if r["success"]))
    # the known answers, written out: the two settings of vit_a are not pooled (7/8)
    assert got[("vit_a", "default")]["success_rate"] == pytest.approx(3 / 4)
    assert got[("vit_a", "paper")]["success_rate"] == pytest.approx(1 / 2)
    assert got[("vit_b", "default")]["success_rate"] == pytest.approx(3 / 4)
    assert got[("vit_a", "default")]["n_error"] == 1 and got[("vit_a", "paper")]["n_error"] == 0
    assert got[("vit_a", "paper")]["median_steps_success"] == pytest.approx(3000)
    assert not (df["success_rate"] - 7 / 8).abs().lt(1e-9).any()


def test_invisibility(con) -> None:
    got = by_setting(run_named(con, "invisibility", {}))
    assert list(got) == list(MATCH_SETTINGS)
    for (model, setting), row in got.items():
        succ = [r for r in ok_rows("match", model, setting) if r["success"]]
        assert row["setting"] == MATCH_SETTING_TEXT[setting]
        assert row["n_success"] == len(succ)
        assert row["median_psnr"] == pytest.approx(statistics.median(r["psnr"] for r in succ))
        assert row["mean_ssim"] == pytest.approx(mean(r["ssim"] for r in succ))
        assert row["max_pix_linf"] == pytest.approx(max(r["pix_linf"] for r in succ))
        assert row["quant_success_rate"] == pytest.approx(mean(r["quant_success"] for r in succ))
    assert got[("vit_a", "default")]["median_psnr"] == pytest.approx(35.0)
    assert got[("vit_b", "default")]["median_psnr"] == pytest.approx(36.0)
    assert got[("vit_a", "paper")]["median_psnr"] == pytest.approx(43.5)  # (45 + 42) / 2
    assert got[("vit_a", "default")]["quant_success_rate"] == pytest.approx(2 / 3)
    assert got[("vit_a", "paper")]["quant_success_rate"] == pytest.approx(1 / 2)


def test_overgeneralisation(con) -> None:
    got = by_setting(run_named(con, "overgeneralisation", {}))
    assert list(got) == list(MATCH_SETTINGS)
    for (model, setting), row in got.items():
        rows = ok_rows("match", model, setting)
        succ = [r for r in rows if r["success"]]
        assert row["setting"] == MATCH_SETTING_TEXT[setting]
        assert row["head_target_rate_success"] == pytest.approx(
            mean(r["pred_adv"] == r["pred_tgt"] for r in succ))
        assert row["head_target_rate_all"] == pytest.approx(
            mean(r["pred_adv"] == r["pred_tgt"] for r in rows))
        assert row["knn_target_rate_success"] == pytest.approx(
            mean(r["knn_adv"] == r["knn_tgt"] for r in succ))
        assert row["knn_target_rate_all"] == pytest.approx(0.5)
    assert got[("vit_a", "default")]["head_target_rate_success"] == pytest.approx(2 / 3)
    assert got[("vit_a", "paper")]["head_target_rate_success"] == pytest.approx(1.0)
    assert got[("vit_a", "paper")]["knn_target_rate_success"] == pytest.approx(1 / 2)
    # the fixture's labels always differ at source and target: nothing is left out
    for row in got.values():
        assert row["n_head_same_label"] == row["n_knn_same_label"] == 0
        assert row["n_head_same_label_success"] == row["n_knn_same_label_success"] == 0


# Hand-made match rows with labels: (success, pred src/tgt/adv, knn src/tgt/adv); p7 is an error.
HAND_LABELS = {
    "p0": (True, (1, 2, 2), (1, 2, 2)),           # both labellers: differ, labelled as target
    "p1": (True, (1, 2, 1), (1, 1, 1)),           # head: kept the source; knn: same label (out)
    "p2": (True, (3, 3, 3), (3, 4, 4)),           # head: same label (out); knn: as target
    "p3": (True, (5, 6, 7), (5, 6, 5)),           # head: neither; knn: kept the source
    "p4": (False, (1, 2, 2), (1, 1, 1)),          # not a success: only in the "_all" shares
    "p5": (False, (8, 8, 8), (8, 9, 8)),
    "p6": (True, (None, None, None), (2, 3, 3)),  # no head labels (a CLIP model)
}


def _hand_labelled_run(root: Path) -> Path:
    from sweep.run.store import RunStore
    from sweep.schema import to_table

    rows = []
    for pair_id, (success, pred, knn) in {**HAND_LABELS, "p7": (None, (None,) * 3, (None,) * 3)}.items():
        rows.append({
            "run_id": "hand", "unit_id": "u0", "pair_id": pair_id, "model": "vit_h",
            "weights": "random:0", "embed": "pre_logits", "probe": "match", "config_hash": "cfg-h",
            "params": "{}", "status": "error" if pair_id == "p7" else "ok",
            "error": "boom" if pair_id == "p7" else None, "success": success,
            "pred_src": pred[0], "pred_tgt": pred[1], "pred_adv": pred[2],
            "knn_src": knn[0], "knn_tgt": knn[1], "knn_adv": knn[2],
        })
    run = root / "hand"
    RunStore(run).write_unit_tables("match", "vit_h", "u0", {"match": to_table("match", rows)})
    return run


def test_overgeneralisation_leaves_out_same_label_pairs(tmp_path: Path) -> None:
    """Shares over the pairs each labeller labels differently at source and target, with the
    counts left out; answers worked out by hand from HAND_LABELS."""
    con = open_runs([_hand_labelled_run(tmp_path)])
    row = run_named(con, "overgeneralisation", {}).to_dict("records")[0]
    assert (row["n_ok"], row["n_success"]) == (7, 5)
    # head, successes labelled differently: p0 (target), p1 (source), p3 (neither); p2 left out
    assert row["n_head_labelled_success"] == 3
    assert row["head_target_rate_success"] == pytest.approx(1 / 3)
    assert row["head_source_rate_success"] == pytest.approx(1 / 3)
    assert (row["n_head_same_label_success"], row["n_head_same_label"]) == (1, 2)  # p2; p2, p5
    assert row["head_target_rate_all"] == pytest.approx(2 / 4)  # p0, p4 of p0, p1, p3, p4
    # k-NN, successes labelled differently: p0, p2, p6 (target), p3 (source); p1 left out
    assert row["n_knn_labelled_success"] == 4
    assert row["knn_target_rate_success"] == pytest.approx(3 / 4)
    assert row["knn_source_rate_success"] == pytest.approx(1 / 4)
    assert (row["n_knn_same_label_success"], row["n_knn_same_label"]) == (1, 2)  # p1; p1, p4
    assert row["knn_target_rate_all"] == pytest.approx(3 / 5)  # p0, p2, p6 of p0, p2, p3, p5, p6
    # the claims query counts the same pairs
    claims = run_named(con, "claims", {})
    og = claims[claims["claim"] == "overgeneralisation"].to_dict("records")[0]
    checks = {c["statistic"]: c for c in json.loads(og["checks"])}
    assert (checks["head_target_rate"]["n"], checks["head_target_rate"]["n_left_out"]) == (3, 1)
    assert checks["head_target_rate"]["estimate"] == pytest.approx(1 / 3)
    assert (checks["knn_target_rate"]["n"], checks["knn_target_rate"]["n_left_out"]) == (4, 1)
    assert checks["knn_target_rate"]["estimate"] == pytest.approx(3 / 4)
    assert og["verdict"] == "inconclusive"  # 3 and 4 pairs: below the minimum n


def test_claims(con) -> None:
    """One verdict row per probe setting and claim, never pooled; n and estimates equal plain
    Python over the fixture's rows (all inconclusive: a few pairs each)."""
    df = run_named(con, "claims", {})
    got = {(r["config_hash"], r["claim"]): r for r in df.to_dict("records")}
    assert len(got) == len(df) == 3 * 3 + 2 + 2
    assert set(df["verdict"]) == {"inconclusive"}
    for model, setting in MATCH_SETTINGS:
        cfg = config_hash(model, "match", setting)
        rows = ok_rows("match", model, setting)
        succ = [r for r in rows if r["success"]]
        eq = got[(cfg, "equivalence")]
        assert (eq["n"], eq["estimate"]) == (len(rows), pytest.approx(mean(r["success"] for r in rows)))
        assert eq["setting"] == MATCH_SETTING_TEXT[setting]
        inv = {c["statistic"]: c for c in json.loads(got[(cfg, "invisibility")]["checks"])}
        assert inv["median_psnr"]["estimate"] == pytest.approx(statistics.median(r["psnr"] for r in succ))
        assert inv["quant_rate"]["estimate"] == pytest.approx(mean(r["quant_success"] for r in succ))
        og = got[(cfg, "overgeneralisation")]
        assert og["estimate"] == pytest.approx(mean(r["pred_adv"] == r["pred_tgt"] for r in succ))
    for m, model in enumerate(MODELS):
        normal = {(c["statistic"], c["norm"]): c
                  for c in json.loads(got[(config_hash(model, "perturb"), "normal_space")]["checks"])}
        rows = ok_rows("perturb", model)
        for norm in ("linf", "l2"):
            eps = min(r["eps"] for r in rows if r["norm"] == norm)
            at = [r for r in rows if r["norm"] == norm and r["eps"] == eps]
            assert normal[("median_disp_over_pair", norm)]["estimate"] == pytest.approx(
                statistics.median(r["disp_over_pair"] for r in at))
            assert normal[("median_over_random", norm)]["estimate"] == pytest.approx(20.0)
        lip = got[(config_hash(model, "lipschitz"), "lipschitz")]
        checks = {c["statistic"]: c for c in json.loads(lip["checks"])}
        # per pair: sigma_1 (100·(i+1)(1+m)) over the median random (3·(i+1)) -> 33.3·(1+m)
        assert (lip["n"], lip["estimate"]) == (2, pytest.approx(100.0 * (1 + m) / 3))
        # at h = 1: median top l_fd (50·(i+1)(1+m)·1.1) over median null (1·(i+1)·1.1) -> 50·(1+m)
        fd = checks["median_top_over_null_fd"]
        assert (fd["n"], fd["estimate"], fd["h"]) == (2, pytest.approx(50.0 * (1 + m)), 1.0)
    assert run_named(con, "claims", {"config_hash": config_hash("vit_a", "match", "paper")})[
        "claim"].tolist() == ["equivalence", "invisibility", "overgeneralisation"]


def test_config_hash_filter(con) -> None:
    paper = config_hash("vit_a", "match", "paper")
    for name in ("equivalence", "invisibility", "overgeneralisation", "match_pairs", "loss_curves",
                 "gallery", "overview"):
        df = run_named(con, name, {"config_hash": paper})
        assert len(df) and set(df["config_hash"]) == {paper}, name
        assert set(df["setting"]) == {MATCH_SETTING_TEXT["paper"]}, name
    eq = run_named(con, "equivalence", {"config_hash": paper})
    assert eq["success_rate"].tolist() == pytest.approx([0.5])
    assert len(run_named(con, "match_pairs", {"config_hash": paper})) == 4
    assert len(run_named(con, "equivalence", {"config_hash": ""})) == 3
    assert len(run_named(con, "equivalence", {"config_hash": "NULL"})) == 3
    assert run_named(con, "equivalence", {"config_hash": "x' OR '1'='1"}).empty
    lip = config_hash("vit_b", "lipschitz")
    for name in ("lipschitz", "lipschitz_families", "lipschitz_pairs", "lipschitz_directions",
                 "nonlinearity"):
        df = run_named(con, name, {"config_hash": lip})
        assert len(df) and set(df["model"]) == {"vit_b"}, name
    perturb = run_named(con, "normal_space", {"config_hash": config_hash("vit_a", "perturb")})
    assert set(perturb["model"]) == {"vit_a"} and len(perturb) == 7
    assert run_named(con, "equivalence", {"config_hash": config_hash("vit_a", "perturb")}).empty


def test_normal_space(con) -> None:
    df = run_named(con, "normal_space", {})
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ROWS["perturb"]:
        if r["status"] == "ok":
            groups[(r["model"], r["norm"], round(r["eps"], 9))].append(r)
    assert len(df) == len(groups) == 2 * 7
    for row in df.to_dict("records"):
        rows = groups[(row["model"], row["norm"], round(row["eps"], 9))]
        assert row["config_hash"] == config_hash(row["model"], "perturb")
        assert row["setting"] == PERTURB_SETTING_TEXT
        assert row["n"] == len(rows) == 3
        assert row["median_disp_over_pair"] == pytest.approx(
            statistics.median(r["disp_over_pair"] for r in rows))
        assert row["median_random_disp_over_pair"] == pytest.approx(
            statistics.median(r["random_disp_over_pair"] for r in rows))
        assert row["median_over_random"] == pytest.approx(20.0)
    linf = run_named(con, "normal_space", {"model": "vit_a", "norm": "linf"})
    assert list(linf["eps_255"].round(6)) == [1.0, 2.0, 4.0, 8.0]
    assert linf["median_disp_over_pair"].tolist() == pytest.approx([0.11, 0.22, 0.44, 0.88])


def test_lipschitz(con) -> None:
    got = by_model(run_named(con, "lipschitz", {}))
    for m, model in enumerate(MODELS):
        per_pair = defaultdict(lambda: defaultdict(dict))
        for r in ok_rows("lipschitz", model):
            per_pair[r["pair_id"]][r["family"]][r["direction"]] = r
        ratios, gaps, grads, flats = [], [], [], []
        for fams in per_pair.values():
            grads.append(fams["grad"][0]["l_jvp"] / statistics.median(r["l_jvp"] for r in fams["random"].values()))
            flats.append(statistics.median(r["l_jvp"] for r in fams["random"].values())
                         / statistics.median(r["l_jvp"] for r in fams["null"].values()))
            sigma1 = max(r["sigma"] for r in fams["top"].values())
            med_random = statistics.median(r["l_jvp"] for r in fams["random"].values())
            ratios.append(sigma1 / med_random)
            gaps.append(statistics.median(r["l_jvp"] for r in fams["top"].values())
                        / statistics.median(r["l_jvp"] for r in fams["null"].values()))
        row = got[model]
        assert row["setting"] == LIPSCHITZ_SETTING_TEXT
        assert row["config_hash"] == config_hash(model, "lipschitz")
        assert row["n_pairs"] == 2
        assert row["median_sigma1_over_random"] == pytest.approx(statistics.median(ratios))
        assert row["median_sigma1_over_random"] == pytest.approx(100 * (1 + m) / 3)
        assert row["geomean_sigma1_over_random"] == pytest.approx(
            math.exp(mean(math.log(x) for x in ratios)))
        assert row["median_top_over_null"] == pytest.approx(statistics.median(gaps))
        assert row["median_grad_over_random"] == pytest.approx(statistics.median(grads))
        assert row["median_random_over_null"] == pytest.approx(statistics.median(flats))
    pairs = run_named(con, "lipschitz_pairs", {"model": "vit_a"})
    assert pairs["sigma1"].tolist() == [100.0, 200.0]
    assert pairs["median_random"].tolist() == [3.0, 6.0]
    assert pairs["grad_over_random"].tolist() == pytest.approx([4.0, 2.0])
    assert pairs["rank"].tolist() == [48, 48]


def test_nonlinearity(con) -> None:
    df = run_named(con, "nonlinearity", {"model": "vit_b"})
    assert set(df["family"]) == {"top", "random", "null", "match", "grad"}
    for row in df.to_dict("records"):
        assert row["n_resolved"] == row["n"]  # the fixture has no NULL nonlinearity
        assert row["mean_nonlinearity"] == pytest.approx(0.1 * row["h"])


def test_overview_and_failures(con) -> None:
    ov = run_named(con, "overview", {})
    key = {r["config_hash"]: r for r in ov.to_dict("records")}
    assert len(key) == len(ov) == 7  # 3 match settings, 2 perturb, 2 lipschitz
    assert key[config_hash("vit_b", "perturb")]["units"] == 2
    assert key[config_hash("vit_b", "perturb")]["units_error"] == 1
    assert key[config_hash("vit_a", "match")]["pairs_error"] == 1
    assert key[config_hash("vit_a", "match")]["pairs_ok"] == 4
    paper = key[config_hash("vit_a", "match", "paper")]
    assert (paper["units"], paper["units_ok"], paper["pairs_ok"], paper["pairs_error"]) == (1, 1, 4, 0)
    assert paper["setting"] == MATCH_SETTING_TEXT["paper"]
    assert sum(r["units_ok"] for r in ov.to_dict("records")) == 7
    fails = run_named(con, "failures", {})
    units = fails[fails["kind"] == "unit"]
    assert units["unit_id"].tolist() == ["vit_b-perturb-1"]
    assert "worker died" in units["error"].iloc[0]
    pairs = fails[fails["kind"] == "pair"]
    want = {(r["model"], r["probe"], r["pair_id"], r["error"])
            for t in ("match", "perturb", "lipschitz") for r in ROWS[t] if r["status"] == "error"}
    assert set(zip(pairs["model"], pairs["probe"], pairs["pair_id"], pairs["error"])) == want


def test_partial_run_overview_counts_units_in_progress(runs) -> None:
    ov = run_named(open_runs([runs["partial"]]), "overview", {})
    assert (ov["units_in_progress"] == 1).all() and (ov["units_ok"] == 0).all()
    assert run_named(open_runs([runs["partial"]]), "lipschitz", {}).empty


def test_filters_and_grouping_by_weights(runs) -> None:
    con = open_runs([runs["complete"], runs["other_weights"]])
    eq = run_named(con, "equivalence", {})
    assert list(zip(eq["model"], eq["weights"], eq["setting"])) == [
        ("vit_a", "random:0", MATCH_SETTING_TEXT["default"]),
        ("vit_a", "random:0", MATCH_SETTING_TEXT["paper"]),
        ("vit_a", "timm:in1k", MATCH_SETTING_TEXT["default"]),
        ("vit_a", "timm:in1k", MATCH_SETTING_TEXT["paper"]),
        ("vit_b", "random:0", MATCH_SETTING_TEXT["default"])]
    only = run_named(con, "equivalence", {"weights": "timm:in1k"})
    assert only["model"].tolist() == ["vit_a", "vit_a"]
    assert only["success_rate"].tolist() == pytest.approx([0.75, 0.5])
    assert run_named(con, "equivalence", {"model": "NULL"}).shape[0] == 5
    assert run_named(con, "equivalence", {"run_id": "w-run"}).shape[0] == 2
    assert run_named(con, "equivalence", {"model": "no-such-model"}).empty
    # a parameter value is bound, never spliced into SQL
    assert run_named(con, "equivalence", {"model": "x' OR '1'='1"}).empty


def test_gallery_and_limits(con) -> None:
    g = run_named(con, "gallery", {"limit": "1"})
    # at most one triple per model, weights, embedding point and setting
    assert len(g) == 3 and set(g["model"]) == set(MODELS)
    assert sorted(g["config_hash"]) == sorted(config_hash(m, "match", s) for m, s in MATCH_SETTINGS)
    assert bytes(g["src_png"].iloc[0]).startswith(b"\x89PNG")
    assert len(run_named(con, "loss_curves", {"limit": "3"})) == 3


def test_unknown_query_and_parameter(con) -> None:
    with pytest.raises(UnknownQuery, match="unknown named query"):
        run_named(con, "nope", {})
    with pytest.raises(ValueError, match="no parameter"):
        run_named(con, "equivalence", {"colour": "red"})
    assert isinstance(UnknownQuery("x"), ValueError)
