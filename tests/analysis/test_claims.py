"""Verdicts (analysis/claims.py): the bootstrap against plain resampling, the verdict rule, runs
built to satisfy or violate each claim (expected numbers computed in plain Python from the rows
written), small n, criteria files, and the named query `claims` against report.json."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.support.claim_runs import make_claims_run

from analysis.claims import (
    CLAIMS,
    CriteriaError,
    bootstrap_median,
    bootstrap_rate,
    check_rng,
    combine,
    judge_check,
    load_criteria,
)
from analysis.db import open_runs
from analysis.named import get_named, run_named, run_named_arrow
from analysis.report import write_report
from analysis.report.sentences import _top_null_sentence
from sweep.cli import main

ROOT = Path(__file__).resolve().parents[2]
# What the report may say about how matched images look only under a supported invisibility verdict.
LOOKS_LIKE = ("look like their sources", "looks like its source", "pass as their sources",
              "still look", "indistinguishable")


# ---------------------------------------------------------------- bootstrap

def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """The largest gap between the empirical CDFs of a and b."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _resampled(values: np.ndarray, statistic, b: int, seed: int) -> np.ndarray:
    """The plain bootstrap: b resamples with replacement, the statistic of each."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(b, len(values)))
    return statistic(values[idx], axis=1)


@pytest.mark.parametrize("n", [41, 40, 7, 2])
def test_median_bootstrap_has_the_resampling_distribution(n: int) -> None:
    rng = np.random.default_rng(n)
    values = np.sort(np.round(rng.gamma(2.0, 3.0, size=n), 1))  # rounded: ties
    fast = bootstrap_median(values, 40_000, np.random.default_rng(1))
    plain = _resampled(values, np.median, 40_000, 2)
    assert _ks(fast, plain) < 0.015, n
    # every replicate is a possible median of a resample: a value or the mean of two values
    pairs = {(a + b) / 2 for a in values for b in values} | set(values)
    assert all(any(math.isclose(x, p) for p in pairs) for x in np.unique(fast))


def test_rate_bootstrap_has_the_resampling_distribution() -> None:
    values = np.array([1.0] * 31 + [0.0] * 9)
    fast = bootstrap_rate(40, 31, 40_000, np.random.default_rng(1))
    plain = _resampled(values, np.mean, 40_000, 2)
    assert _ks(fast, plain) < 0.015


def test_bootstrap_is_seeded_per_check() -> None:
    values = np.arange(50, dtype=float)
    a = bootstrap_median(values, 500, check_rng(0, "cfg|invisibility|median_psnr|None"))
    b = bootstrap_median(values, 500, check_rng(0, "cfg|invisibility|median_psnr|None"))
    c = bootstrap_median(values, 500, check_rng(0, "cfg|invisibility|median_ssim|None"))
    d = bootstrap_median(values, 500, check_rng(1, "cfg|invisibility|median_psnr|None"))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)


# ---------------------------------------------------------------- the verdict rule

CRITERIA = load_criteria()


def _check(sample: list[float], threshold: float, min_n: int = 30):
    return judge_check("median_psnr", len(sample), None, sorted(sample), threshold, min_n,
                       CRITERIA, "k")


def test_verdict_rule() -> None:
    flat = [30.0] * 40
    assert _check(flat, 30.0).verdict == "supported"  # interval [30, 30] at the threshold
    assert _check(flat, 30.0 + 1e-9).verdict == "not_supported"
    assert _check(flat[:29], 20.0).verdict == "inconclusive"  # below min_n, however clear
    assert "below the minimum of 30" in _check(flat[:29], 20.0).reason
    assert _check(flat[:29], 20.0, min_n=29).verdict == "supported"
    spread = [float(x) for x in range(20, 61)]  # median 40, interval well inside 20..60
    check = _check(spread, 40.0)
    assert check.verdict == "inconclusive" and "contains 40" in check.reason
    assert check.ci_low < 40 < check.ci_high and check.estimate == 40.0
    empty = judge_check("quant_rate", 0, 0, None, 0.9, 30, CRITERIA, "k")
    assert empty.verdict == "inconclusive" and empty.estimate is None and empty.reason.startswith("n = 0")


def test_combine_takes_the_deciding_check() -> None:
    yes, no, maybe = (_check([30.0] * 40, 30.0), _check([30.0] * 40, 31.0),
                      _check([30.0] * 10, 30.0))
    assert combine([yes, yes]) == ("supported", yes)
    assert combine([yes, maybe, no]) == ("not_supported", no)
    assert combine([yes, maybe]) == ("inconclusive", maybe)


# ---------------------------------------------------------------- runs built to satisfy / violate

def _expected(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, tuple[int, float]]]:
    """(n, estimate) of every check, in plain Python over the rows written."""
    match = [r for r in rows["match"] if r["status"] == "ok"]
    succ = [r for r in match if r["success"]]
    out: dict[str, dict[str, tuple[int, float]]] = {}
    out["equivalence"] = {"success_rate": (len(match), sum(r["success"] for r in match) / len(match))}
    out["invisibility"] = {
        "median_psnr": (len(succ), statistics.median(r["psnr"] for r in succ)),
        "median_ssim": (len(succ), statistics.median(r["ssim"] for r in succ)),
        "quant_rate": (len(succ), sum(r["quant_success"] for r in succ) / len(succ)),
    }
    smallest = min(r["eps"] for r in rows["perturb"])
    at = [r for r in rows["perturb"] if r["eps"] == smallest]
    out["normal_space"] = {
        "median_disp_over_pair": (len(at), statistics.median(r["disp_over_pair"] for r in at)),
        "median_over_random": (len(at), statistics.median(
            r["disp_over_pair"] / r["random_disp_over_pair"] for r in at)),
    }
    per_pair: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows["lipschitz"]:
        per_pair[r["pair_id"]][r["family"]][r["direction"]] = r["l_jvp"]
    ratios = [statistics.median(f["top"].values()) / statistics.median(f["null"].values())
              for f in per_pair.values() if f.get("null")]
    out["lipschitz"] = {"median_top_over_null": (len(ratios), statistics.median(ratios) if ratios else math.nan)}
    og = {}
    for labeller in ("pred", "knn"):
        differ = [r for r in succ if r[f"{labeller}_src"] != r[f"{labeller}_tgt"]]
        name = "head" if labeller == "pred" else "knn"
        og[f"{name}_target_rate"] = (
            len(differ), sum(r[f"{labeller}_adv"] == r[f"{labeller}_tgt"] for r in differ) / len(differ))
    out["overgeneralisation"] = og
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("claims")
    return {
        "satisfy": make_claims_run(root / "s", "satisfy"),
        "violate": make_claims_run(root / "v", "violate"),
        "demo": make_claims_run(root / "d", "demo"),
        "small": make_claims_run(root / "n", "satisfy", n=8),
        "small_demo": make_claims_run(root / "nd", "demo", n=8),
        "no_null": make_claims_run(root / "nn", "satisfy", null=False),
    }


def _claims(run: Path, params: dict[str, str | None] | None = None) -> dict[str, dict[str, Any]]:
    df = run_named(open_runs([run]), "claims", params or {})
    out = {r["claim"]: r for r in df.to_dict("records")}
    assert len(out) == len(df) == len(CLAIMS), "one row per claim for the one setting of each probe"
    return out


@pytest.mark.parametrize("mode, verdict", [("satisfy", "supported"), ("violate", "not_supported")])
def test_each_claim_is_judged_from_its_numbers(runs, mode: str, verdict: str) -> None:
    run, rows = runs[mode]
    got = _claims(run)
    expected = _expected(rows)
    for claim in CLAIMS:
        row = got[claim]
        assert row["verdict"] == verdict, (claim, row["reason"])
        assert row["model"] == "vit_v" and row["weights"] == "random:0" and row["embed"] == "pre_logits"
        checks = json.loads(row["checks"])
        assert {c["statistic"]: (c["n"], pytest.approx(c["estimate"])) for c in checks} == \
            {k: (n, pytest.approx(e)) for k, (n, e) in expected[claim].items()}, claim
        for c in checks:
            assert c["ci_low"] <= c["estimate"] <= c["ci_high"], (claim, c)
            if verdict == "supported":
                assert c["verdict"] == "supported" and c["ci_low"] >= c["threshold"], (claim, c)
        decided = next(c for c in checks if c["verdict"] == verdict)
        assert (row["statistic"], row["n"], row["estimate"], row["ci_low"], row["ci_high"]) == \
            (decided["statistic"], decided["n"], decided["estimate"], decided["ci_low"], decided["ci_high"])
        if verdict == "not_supported":
            assert row["ci_high"] < row["threshold"], claim
    # the same-label pairs (every seventh of 40) are out of the overgeneralisation rate
    assert got["overgeneralisation"]["n"] == 40 - 6
    assert json.loads(got["overgeneralisation"]["checks"])[0]["n_left_out"] == 6


def test_demo_like_run_is_not_called_invisible(runs, tmp_path: Path) -> None:
    for kind, verdict in (("demo", "not_supported"), ("small_demo", "inconclusive")):
        run, rows = runs[kind]
        got = _claims(run)
        assert got["invisibility"]["verdict"] == verdict
        assert got["invisibility"]["estimate"] == pytest.approx(
            statistics.median(r["psnr"] for r in rows["match"] if r["success"]))
        paths = write_report([run], tmp_path / kind)
        for text in (paths["html"].read_text(), paths["md"].read_text()):
            for phrase in LOOKS_LIKE:
                assert phrase not in text, (kind, phrase)
            assert "median PSNR" in text
        if verdict == "not_supported":
            assert "fail the invisibility criterion" in paths["md"].read_text()
    # and a run that does satisfy it says so
    satisfy = write_report([runs["satisfy"][0]], tmp_path / "satisfy")
    assert "pass as their sources" in satisfy["md"].read_text()


def test_small_n_is_inconclusive(runs) -> None:
    got = _claims(runs["small"][0])
    for claim, row in got.items():
        assert row["verdict"] == "inconclusive", claim
        assert "below the minimum of 30" in row["reason"], claim
        assert row["n"] < 30


def test_missing_and_nan_values_are_left_out(tmp_path: Path) -> None:
    """Successful matches without a PSNR (NULL or NaN) count for the success rate, not for the
    PSNR median; a perturb row without a random baseline is out of the ratio check only."""
    from sweep.run.store import RunStore
    from sweep.schema import to_table

    run, rows = make_claims_run(tmp_path, "satisfy")
    extra = [dict(r, unit_id="vit_v-match-1", pair_id=f"x{i}", psnr=[None, math.nan][i % 2],
                  ssim=0.97) for i, r in enumerate(rows["match"][:6])]
    RunStore(run).write_unit_tables("match", "vit_v", "vit_v-match-1",
                                    {"match": to_table("match", extra)})
    got = _claims(run)
    inv = {c["statistic"]: c for c in json.loads(got["invisibility"]["checks"])}
    assert (inv["median_psnr"]["n"], inv["median_ssim"]["n"], got["equivalence"]["n"]) == (40, 46, 46)
    assert inv["median_psnr"]["estimate"] == pytest.approx(
        statistics.median(r["psnr"] for r in rows["match"]))
    assert got["invisibility"]["verdict"] == "supported"


def test_lipschitz_without_null_directions_is_inconclusive(runs) -> None:
    got = _claims(runs["no_null"][0])
    assert got["lipschitz"]["verdict"] == "inconclusive" and got["lipschitz"]["n"] == 0
    assert "null" in got["lipschitz"]["reason"]
    assert got["equivalence"]["verdict"] == "supported"


def test_report_sentences_follow_the_verdicts(runs, tmp_path: Path) -> None:
    md = write_report([runs["violate"][0]], tmp_path / "v")["md"].read_text()
    # one verdict sentence per claim; invisibility's is the one on how the images look
    assert md.count("Verdict on ") == 4 and "Verdict on equivalence: not supported" in md
    assert md.count("fail the invisibility criterion") == 1
    assert "equivalence **not supported**" in md and "invisibility **not supported**" in md
    md = write_report([runs["no_null"][0]], tmp_path / "nn")["md"].read_text()
    assert "exceeds" not in md and "so the two are not compared" in md
    assert "lipschitz **inconclusive**" in md
    assert "does not exceed" in _top_null_sentence(0.5) and "exceeds" not in _top_null_sentence(1.0)
    assert "exceeds" in _top_null_sentence(2.0)


# ---------------------------------------------------------------- criteria and the named query

def test_named_query_equals_report_json(runs, tmp_path: Path) -> None:
    for kind in ("satisfy", "violate", "no_null"):
        run = runs[kind][0]
        report = json.loads(write_report([run], tmp_path / kind)["json"].read_text())
        table = run_named_arrow(open_runs([run]), "claims", {}).to_pylist()
        for row in table:
            row["checks"] = json.loads(row["checks"])
        assert report["claims"] == table, kind
        assert report["criteria"]["min_n"] == 30
        for key in ("claim", "verdict", "criterion", "n", "estimate", "ci_low", "ci_high",
                    "model", "weights", "embed", "config_hash"):
            assert all(key in r for r in report["claims"]), key


def test_criteria_file_changes_the_verdicts(runs, tmp_path: Path) -> None:
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("invisibility:\n  min_median_psnr: 10\n  min_median_ssim: 0.1\n"
                       "  min_quant_rate: 0.1\nmin_n: 5\n")
    criteria = load_criteria(lenient)
    assert criteria.invisibility.min_median_psnr == 10 and criteria.min_n == 5
    assert criteria.equivalence.min_success_rate == load_criteria().equivalence.min_success_rate
    demo = runs["demo"][0]
    assert _claims(demo, {"criteria": str(lenient)})["invisibility"]["verdict"] == "supported"
    assert _claims(runs["small"][0], {"criteria": str(lenient)})["equivalence"]["verdict"] == "supported"
    # the same through the command line, with the criteria recorded in report.json
    out = tmp_path / "cli"
    assert main(["report", str(demo), "--out", str(out), "--criteria", str(lenient)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["criteria"]["source"] == str(lenient)
    assert {c["claim"]: c["verdict"] for c in report["claims"]}["invisibility"] == "supported"
    assert "pass as their sources" in (out / "report.md").read_text()
    per_claim = tmp_path / "claim_min_n.yaml"
    per_claim.write_text("invisibility:\n  min_n: 50\n")
    assert _claims(demo, {"criteria": str(per_claim)})["invisibility"]["verdict"] == "inconclusive"
    assert "criteria" in get_named("claims").option_names


@pytest.mark.parametrize("text, message", [
    ("invisibility:\n  min_psnr: 30\n", "invisibility.min_psnr"),
    ("min_n: zero\n", "min_n"),
    ("equivalence:\n  min_success_rate: 1.5\n", "equivalence.min_success_rate"),
    ("overgeneralisation:\n  labellers: [zero_shot]\n", "overgeneralisation.labellers"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("a: [1, 2\n", "not valid YAML"),
])
def test_bad_criteria_files(tmp_path: Path, capsys, runs, text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(CriteriaError, match="bad.yaml") as err:
        load_criteria(bad)
    assert message in str(err.value) and "\n" not in str(err.value)
    out = tmp_path / "out"
    assert main(["report", str(runs["satisfy"][0]), "--out", str(out), "--criteria", str(bad)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0]
    assert not out.exists()  # checked before anything is written
    assert main(["query", str(runs["satisfy"][0]), "--named", "claims", "--param",
                 f"criteria={bad}"]) == 2
    assert message in capsys.readouterr().err


def test_missing_criteria_file_from_a_subprocess(runs, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sweep.cli", "report", str(runs["satisfy"][0]),
                          "--out", str(tmp_path / "o"), "--criteria", str(tmp_path / "nope.yaml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "criteria file not found" in out.stderr
