"""run_unit without Ray: rows per table, error rows, gallery, k-NN exclusion, idempotent rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweep.probes.base import PairResult
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, _knn_labels, _Pair, run_unit
from sweep_helpers import ROWS_PER_PAIR, make_shards, read_table, write_spec

PAIRS = 5
CORRUPT = 2  # pair index with an undecodable source image


@pytest.fixture(scope="module")
def unit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("worker")
    make_shards(tmp / "shards", 1, PAIRS, corrupt={CORRUPT})
    loaded = load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", gallery=2))
    cache = EncoderCache("cpu")
    summaries = [run_unit(unit, cache, str(tmp / "run"), run_id="run-1") for unit in loaded.units]
    return tmp / "run", summaries


def test_rows_per_table(unit_run: tuple[Path, list]) -> None:
    run_dir, summaries = unit_run
    assert [s.status for s in summaries] == ["ok"] * 3
    assert all((s.n_pairs, s.n_ok, s.n_error) == (PAIRS, PAIRS - 1, 1) for s in summaries)
    for probe in ("match", "perturb", "lipschitz"):
        table = read_table(run_dir, probe).to_pylist()
        ok = [r for r in table if r["status"] == "ok"]
        errors = [r for r in table if r["status"] == "error"]
        assert len(ok) == (PAIRS - 1) * ROWS_PER_PAIR[probe]
        assert [r["pair_id"] for r in errors] == [f"pair-{CORRUPT:06d}"]
        assert "not a readable image" in errors[0]["error"]
        assert {r["run_id"] for r in table} == {"run-1"} and {r["probe"] for r in table} == {probe}
        assert all(r["config_hash"] and r["params"] and r["unit_id"] for r in table)
    assert read_table(run_dir, "pairs").num_rows == 3 * PAIRS
    assert read_table(run_dir, "units").num_rows == 3


def test_gallery_and_knn_columns(unit_run: tuple[Path, list]) -> None:
    run_dir, _ = unit_run
    images = read_table(run_dir, "images").to_pylist()
    assert sorted((r["probe"], r["pair_id"]) for r in images) == [
        ("match", "pair-000000"), ("match", "pair-000001"), ("perturb", "pair-000000"), ("perturb", "pair-000001")
    ]
    assert all(r["src_png"].startswith(b"\x89PNG") and r["adv_png"] and r["tgt_png"] for r in images)
    match = [r for r in read_table(run_dir, "match").to_pylist() if r["status"] == "ok"]
    assert all(r["knn_src"] is not None and r["knn_adv"] is not None for r in match)


def test_rerun_overwrites_its_own_files(unit_run: tuple[Path, list], tmp_path: Path) -> None:
    run_dir, _ = unit_run
    loaded = load_spec(run_dir.parent / "spec.yaml")
    unit = loaded.units[0]
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.parquet"))
    rows_before = read_table(run_dir, unit.probe).sort_by("pair_id").to_pylist()
    units_before = {r["unit_id"]: r for r in read_table(run_dir, "units").to_pylist()}
    run_unit(unit, EncoderCache("cpu"), RunStore(run_dir), run_id="run-1", attempt=2)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.parquet")) == before
    assert read_table(run_dir, "match").num_rows == PAIRS
    # the rerun replaced its own rows (same seed: same values) and its own done-marker only
    assert read_table(run_dir, unit.probe).sort_by("pair_id").to_pylist() == rows_before
    units_after = {r["unit_id"]: r for r in read_table(run_dir, "units").to_pylist()}
    assert set(units_after) == set(units_before) and len(units_after) == 3
    assert units_after[unit.unit_id]["attempts"] == 2
    assert units_after[unit.unit_id]["finished_at"] > units_before[unit.unit_id]["finished_at"]
    for unit_id, row in units_after.items():
        if unit_id != unit.unit_id:
            assert row == units_before[unit_id] and row["attempts"] == 1


def test_knn_never_votes_with_the_pairs_own_images() -> None:
    e = torch.eye(4)

    def pair(i: int, src_key: str, tgt_key: str, labels: tuple[int, int], src: torch.Tensor, tgt: torch.Tensor) -> _Pair:
        p = _Pair(i, f"p{i}", src_key, tgt_key, *labels)
        p.result = PairResult(f"p{i}", rows=[{}], embeddings={"src": src, "tgt": tgt}, row_embeddings=[src])
        return p

    # p0's source is nearest to itself (label 0); p1 shares p0's target image (key "b", label 1).
    pairs = [
        pair(0, "a", "b", (0, 1), e[0], e[1]),
        pair(1, "c", "b", (2, 1), e[0] * 0.9 + e[2] * 0.1, e[1]),
        pair(2, "d", "f", (2, 2), e[2], e[3]),
    ]
    labels = _knn_labels(pairs)
    # For p0 only c, d and f may vote (a and b are p0's own images): all labelled 2.
    assert labels["p0"] == {"src": 2, "tgt": 2, 0: 2}
    # For p1, "b" (shared with p0) must not vote either: a (0), d (2), f (2) remain.
    assert labels["p1"]["src"] == 2
