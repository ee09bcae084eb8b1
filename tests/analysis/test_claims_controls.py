"""Checks a trivial map cannot pass (issue 22, points 1-2): a sweep of the random linear test
encoder (a Gaussian 16 x 192 map: tests/support/encoders.py) beside its Gaussian control
`control:gaussian:<it>`, run in process (sweep.run.worker.run_unit, no Ray). No check that such a
map can meet by dimension counting is `supported`: normal_space's over-random ratio and
lipschitz's anisotropy are judged against the control; lipschitz's old statistic (‖J v_top‖ /
‖J v_null‖, 6.6e15 here because J v_null = 0 by construction) is gone. The paper's headline
(probe `equivalence`): on a linear map the walk along random directions never leaves the set, so
`large_equivalence` (the walk against that one) measures nothing and is inconclusive; its sets
are linear, so `piecewise_linear` is supported, as it must be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.claims import judge_check, load_criteria
from analysis.db import open_runs
from analysis.intervals import gaussian_reference
from analysis.named import run_named
from sweep.run.spec import load_spec
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import make_shards, write_spec

LINEAR = "tests.support.encoders:linear_encoder"
CONTROL = f"control:gaussian:{LINEAR}"
# checks whose statistic a Gaussian map of the model's shapes reaches by dimension counting
CONTROLLED = ("median_over_random", "median_anisotropy")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("controls")
    make_shards(root / "shards", 1, 40)
    spec = write_spec(root / "spec.yaml", str(root / "shards"), root / "run",
                      models=[{"name": LINEAR, "weights": "factory"},
                              {"name": CONTROL, "weights": "random:0"}],
                      probes=[{"name": "perturb", "params": {"norm": "linf", "eps": [1 / 255],
                                                             "steps": 10}},
                              {"name": "lipschitz", "params": {"families": ["random", "top", "null"],
                                                               "h": [1.0], "top_k": 2}},
                              {"name": "equivalence", "params": {}}])
    cache = EncoderCache("cpu")
    for unit in load_spec(spec).units:
        run_unit(unit, cache, str(root / "run"), run_id="controls")
    return root / "run"


@pytest.fixture(scope="module")
def claims(run: Path) -> dict[tuple[str, str], dict]:
    df = run_named(open_runs([run]), "claims", {})
    return {(r["model"], r["claim"]): {**r, "checks": json.loads(r["checks"])}
            for r in df.to_dict("records")}


@pytest.mark.parametrize("model", [LINEAR, CONTROL])
def test_no_trivially_met_check_is_supported(claims, model: str) -> None:
    for claim in ("normal_space", "lipschitz"):
        row = claims[(model, claim)]
        assert row["verdict"] != "supported", (model, claim, row["reason"])
        for check in row["checks"]:
            if check["statistic"] in CONTROLLED:
                assert check["verdict"] != "supported", (model, check)
    # the model is its own control's kind of map: not better than it, and judged so
    lip = {c["statistic"]: c for c in claims[(LINEAR, "lipschitz")]["checks"]}
    aniso = lip["median_anisotropy"]
    assert aniso["control_source"] == "run" and aniso["verdict"] == "not_supported"
    assert aniso["estimate"] == pytest.approx(aniso["control_estimate"], rel=0.5)
    normal = {c["statistic"]: c for c in claims[(LINEAR, "normal_space")]["checks"]}
    assert normal["median_over_random"]["control_source"] == "run"
    assert normal["median_over_random"]["verdict"] == "not_supported"
    assert claims[(LINEAR, "lipschitz")]["control_estimate"] is not None


def test_lipschitz_is_not_judged_on_jv_null(claims) -> None:
    """The statistic that read 6.57e15 for this map (‖J v_top‖ / ‖J v_null‖) is no check."""
    stats = {c["statistic"] for c in claims[(LINEAR, "lipschitz")]["checks"]}
    assert stats == {"median_anisotropy", "median_top_over_null_fd"}
    fd = next(c for c in claims[(LINEAR, "lipschitz")]["checks"]
              if c["statistic"] == "median_top_over_null_fd")
    assert fd["h"] == 1.0 and "h = 1" in fd["criterion"]


def test_a_gaussian_map_is_never_supported_against_the_closed_form() -> None:
    """Unit test of judge_check on synthetic values: a statistic at the closed-form reference
    (sigma_1 / random = 1 + sqrt(d / D)) is not_supported however many pairs; 3x it is supported;
    no reference at all is inconclusive, never supported."""
    criteria = load_criteria()
    ref = gaussian_reference(192, 16, "sigma1_over_random")
    assert gaussian_reference(150528, 768, "sigma1_over_random") == pytest.approx(15.0, rel=1e-3)

    def obs(v: float) -> list[dict]:
        return [{"y": v * (1 + 0.01 * i), "s": f"s{i}", "t": f"t{i}", "p": f"p{i}"} for i in range(100)]

    at = judge_check("median_anisotropy", obs(ref), 2.0, 30, criteria, input_dim=192, embed_dim=16)
    assert at.verdict == "not_supported" and at.control_source == "closed_form"
    assert at.control_estimate == pytest.approx(ref) and at.threshold == pytest.approx(2 * ref)
    far = judge_check("median_anisotropy", obs(3 * ref), 2.0, 30, criteria, input_dim=192, embed_dim=16)
    assert far.verdict == "supported"
    blind = judge_check("median_over_random", obs(1e6), 2.0, 30, criteria, norm="linf")
    assert blind.verdict == "inconclusive" and "control:gaussian" in blind.reason
    # L-inf has no closed form: shapes alone do not make a reference
    linf = judge_check("median_over_random", obs(1e6), 2.0, 30, criteria, norm="linf",
                       input_dim=192, embed_dim=16)
    assert linf.verdict == "inconclusive" and linf.control_source is None


def test_nonlinearity_is_undefined_on_null_rows_and_zero_where_resolved(run: Path) -> None:
    """Point 5 on the linear map's sweep: null rows (J v = round-off) are undefined, not 1e10+;
    every other row is within round-off of linear: resolved to zero, counted, median 0."""
    df = run_named(open_runs([run]), "nonlinearity", {"model": LINEAR})
    assert len(df) and (df["max_nonlinearity"].fillna(0) <= 1e3).all()
    for r in df.to_dict("records"):
        if r["family"] == "null":
            assert r["n_undefined"] == r["n"] and r["n_resolved"] == 0, r
        else:
            assert r["n_resolved_zero"] == r["n_resolved"] == r["n"] > 0, r
            assert r["median_nonlinearity"] == 0.0


def test_match_nonlinearity_is_judged_at_most() -> None:
    criteria = load_criteria()

    def obs(v: float) -> list[dict]:
        return [{"y": v * (1 + 0.01 * i), "s": f"s{i}", "t": f"t{i}", "p": f"p{i}"} for i in range(40)]

    flat = judge_check("median_match_nonlinearity", obs(1e-12), 0.5, 30, criteria)
    assert flat.verdict == "supported" and flat.direction == "<=" and "at or below" in flat.reason
    curved = judge_check("median_match_nonlinearity", obs(2.0), 0.5, 30, criteria)
    assert curved.verdict == "not_supported" and "above 0.5" in curved.reason


@pytest.mark.parametrize("model", [LINEAR, CONTROL])
def test_large_equivalence_is_not_met_by_a_linear_map(claims, model: str) -> None:
    """On a linear map both walks keep every step (its set is a whole affine subspace): the
    random walk never finds the set's edge, so no pair's ratio is measured (its radius would be
    the walk's length, a ratio of 1 by construction) and the claim is inconclusive, never
    supported."""
    row = claims[(model, "large_equivalence")]
    assert row["verdict"] == "inconclusive" and row["n"] == 0, row["reason"]
    (check,) = row["checks"]
    assert check["n_left_out"] == 40 and "n = 0" in row["reason"]


def test_piecewise_linear_holds_for_a_linear_map(claims) -> None:
    """The positive control: f(y) - f(target) = s (f(x_matched) - f(target)) on the segment, so
    every successful match's segment stays within its own tolerance (share 1)."""
    row = claims[(LINEAR, "piecewise_linear")]
    assert row["verdict"] == "supported" and row["estimate"] == 1.0 and row["n"] >= 30
