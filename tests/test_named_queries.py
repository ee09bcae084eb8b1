"""Named queries: every one runs on fixture runs; the key ones equal answers computed in plain
Python over the rows the fixture wrote."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.db import open_runs
from analysis.named import UnknownQuery, list_named, run_named, run_named_arrow
from runfixture import fixture_rows, make_fixture_run

MODELS = ("vit_a", "vit_b")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "complete": make_fixture_run(root / "c"),
        "partial": make_fixture_run(root / "p", complete=False),
        "match_only": make_fixture_run(root / "m", only=("match",)),
        "other_weights": make_fixture_run(root / "w", models=("vit_a",), run_id="w-run",
                                          weights="timm:in1k"),
    }


@pytest.fixture(scope="module")
def con(runs):
    return open_runs([runs["complete"]])


ROWS = fixture_rows(MODELS)


def ok_rows(table: str, model: str) -> list[dict[str, Any]]:
    return [r for r in ROWS[table] if r["model"] == model and r["status"] == "ok"]


def by_model(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in df.to_dict("records")}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_every_named_query_runs_on_every_fixture(runs) -> None:
    names = [q.name for q in list_named()]
    assert {"equivalence", "invisibility", "overgeneralisation", "normal_space", "lipschitz",
            "nonlinearity", "overview", "failures"} <= set(names)
    for kind, run in runs.items():
        con = open_runs([run])
        for query in list_named():
            df = run_named(con, query.name, {})
            assert isinstance(df, pd.DataFrame), (kind, query.name)
            if kind == "complete":
                assert len(df) > 0, query.name
            run_named_arrow(con, query.name, {})


def test_headers_declare_exactly_the_bound_parameters(con) -> None:
    for query in list_named():
        assert query.description, query.name
        statement = con.extract_statements(query.sql)
        assert len(statement) == 1, query.name
        used = set(statement[0].named_parameters)
        assert used == set(query.param_names), query.name
        assert "{" not in query.sql, f"{query.name}: no format placeholders in SQL"


def test_equivalence(con) -> None:
    got = by_model(run_named(con, "equivalence", {}))
    assert set(got) == set(MODELS)
    for model in MODELS:
        rows = ok_rows("match", model)
        row = got[model]
        assert row["n_ok"] == 4 and row["n_error"] == 1
        assert row["success_rate"] == pytest.approx(3 / 4)
        assert row["success_rate"] == pytest.approx(mean(r["success"] for r in rows))
        assert row["mean_steps"] == pytest.approx(mean(r["steps"] for r in rows))
        assert row["median_rel_dist"] == pytest.approx(statistics.median(r["rel_dist"] for r in rows))
        assert row["mean_cos"] == pytest.approx(mean(r["cos"] for r in rows))
        assert row["median_steps_success"] == pytest.approx(
            statistics.median(r["steps"] for r in rows if r["success"]))


def test_invisibility(con) -> None:
    got = by_model(run_named(con, "invisibility", {}))
    for m, model in enumerate(MODELS):
        succ = [r for r in ok_rows("match", model) if r["success"]]
        row = got[model]
        assert row["n_success"] == 3
        assert row["median_psnr"] == pytest.approx(35.0 + m)
        assert row["median_psnr"] == pytest.approx(statistics.median(r["psnr"] for r in succ))
        assert row["mean_ssim"] == pytest.approx(mean(r["ssim"] for r in succ))
        assert row["max_pix_linf"] == pytest.approx(max(r["pix_linf"] for r in succ))
        assert row["quant_success_rate"] == pytest.approx(2 / 3)


def test_overgeneralisation(con) -> None:
    got = by_model(run_named(con, "overgeneralisation", {}))
    for model in MODELS:
        rows = ok_rows("match", model)
        succ = [r for r in rows if r["success"]]
        row = got[model]
        assert row["head_target_rate_success"] == pytest.approx(
            mean(r["pred_adv"] == r["pred_tgt"] for r in succ))
        assert row["head_target_rate_all"] == pytest.approx(
            mean(r["pred_adv"] == r["pred_tgt"] for r in rows))
        assert row["knn_target_rate_success"] == pytest.approx(
            mean(r["knn_adv"] == r["knn_tgt"] for r in succ))
        assert row["knn_target_rate_all"] == pytest.approx(0.5)
        assert row["head_target_rate_success"] == pytest.approx(2 / 3)


def test_normal_space(con) -> None:
    df = run_named(con, "normal_space", {})
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ROWS["perturb"]:
        if r["status"] == "ok":
            groups[(r["model"], r["norm"], round(r["eps"], 9))].append(r)
    assert len(df) == len(groups) == 2 * 7
    for row in df.to_dict("records"):
        rows = groups[(row["model"], row["norm"], round(row["eps"], 9))]
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
        ratios, gaps = [], []
        for fams in per_pair.values():
            sigma1 = max(r["sigma"] for r in fams["top"].values())
            med_random = statistics.median(r["l_jvp"] for r in fams["random"].values())
            ratios.append(sigma1 / med_random)
            gaps.append(statistics.median(r["l_jvp"] for r in fams["top"].values())
                        / statistics.median(r["l_jvp"] for r in fams["null"].values()))
        row = got[model]
        assert row["n_pairs"] == 2
        assert row["median_sigma1_over_random"] == pytest.approx(statistics.median(ratios))
        assert row["median_sigma1_over_random"] == pytest.approx(100 * (1 + m) / 3)
        assert row["geomean_sigma1_over_random"] == pytest.approx(
            math.exp(mean(math.log(x) for x in ratios)))
        assert row["median_top_over_null"] == pytest.approx(statistics.median(gaps))
    pairs = run_named(con, "lipschitz_pairs", {"model": "vit_a"})
    assert pairs["sigma1"].tolist() == [100.0, 200.0]
    assert pairs["median_random"].tolist() == [3.0, 6.0]


def test_nonlinearity(con) -> None:
    df = run_named(con, "nonlinearity", {"model": "vit_b"})
    assert set(df["family"]) == {"top", "random", "null", "match"}
    for row in df.to_dict("records"):
        assert row["mean_nonlinearity"] == pytest.approx(0.1 * row["h"])


def test_overview_and_failures(con) -> None:
    ov = run_named(con, "overview", {})
    key = {(r["model"], r["probe"]): r for r in ov.to_dict("records")}
    assert key[("vit_b", "perturb")]["units"] == 2
    assert key[("vit_b", "perturb")]["units_error"] == 1
    assert key[("vit_a", "match")]["pairs_error"] == 1
    assert key[("vit_a", "match")]["pairs_ok"] == 4
    assert sum(r["units_ok"] for r in ov.to_dict("records")) == 6
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
    assert list(zip(eq["model"], eq["weights"])) == [
        ("vit_a", "random:0"), ("vit_a", "timm:in1k"), ("vit_b", "random:0")]
    only = run_named(con, "equivalence", {"weights": "timm:in1k"})
    assert only["model"].tolist() == ["vit_a"]
    assert run_named(con, "equivalence", {"model": "NULL"}).shape[0] == 3
    assert run_named(con, "equivalence", {"run_id": "w-run"}).shape[0] == 1
    assert run_named(con, "equivalence", {"model": "no-such-model"}).empty
    # a parameter value is bound, never spliced into SQL
    assert run_named(con, "equivalence", {"model": "x' OR '1'='1"}).empty


def test_gallery_and_limits(con) -> None:
    g = run_named(con, "gallery", {"limit": "1"})
    assert len(g) == 2 and set(g["model"]) == set(MODELS)
    assert bytes(g["src_png"].iloc[0]).startswith(b"\x89PNG")
    assert len(run_named(con, "loss_curves", {"limit": "3"})) == 3


def test_unknown_query_and_parameter(con) -> None:
    with pytest.raises(UnknownQuery, match="unknown named query"):
        run_named(con, "nope", {})
    with pytest.raises(ValueError, match="no parameter"):
        run_named(con, "equivalence", {"colour": "red"})
    assert isinstance(UnknownQuery("x"), ValueError)
