"""run_unit without Ray: rows per table, error rows, gallery, stored embeddings, k-NN exclusion,
idempotent rewrite."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sweep.probes.labels import knn_vote
from sweep.finished.labels import label_run
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import LINEAR, ROWS_PER_PAIR, make_shards, read_table, write_spec

PAIRS = 5
CORRUPT = 2  # pair index with an undecodable source image
VARIANTS = {"match": "", "perturb": "eps=0.03"}  # the gallery shows perturb's largest eps (FAST_PROBES)


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"))


def _shard_pictures(tar_path: Path) -> dict[tuple[str, str], np.ndarray]:
    """(pair_id, role) -> the pixels of each readable picture in a shard."""
    out = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            pair_id, _, rest = member.name.partition(".")
            if rest in ("src.png", "tgt.png"):
                try:
                    out[(pair_id, rest[:3])] = _decode(tar.extractfile(member).read())
                except OSError:
                    pass  # the corrupt picture
    return out


def _brute_force_knn(query: np.ndarray, bank: dict[str, tuple[np.ndarray, int]], leave_out: set[str], k: int) -> int:
    """Majority of the k nearest (cosine; equal cosine by key) bank images not left out; a tied
    vote goes to the nearest voter."""
    near = sorted((-float(query @ v) / (np.linalg.norm(query) * np.linalg.norm(v)), key, label)
                  for key, (v, label) in bank.items() if key not in leave_out)[:k]
    voters = [label for _, _, label in near]
    counts = Counter(voters)
    return next(v for v in voters if counts[v] == max(counts.values()))


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
    assert all(r["knn_adv"] is None for r in match)  # the labels pass labels them, not the unit
    label_run(run_dir)
    labels = {r["pair_id"]: r for r in read_table(run_dir, "labels").to_pylist() if r["probe"] == "match"}
    assert sorted(labels) == sorted(r["pair_id"] for r in match)
    assert all(r["knn_src"] is not None and r["knn_adv"] is not None for r in labels.values())
    # the gallery's source and target are the shard's pictures, pixel for pixel
    shard = _shard_pictures(run_dir.parent / "shards" / "shard-000000.tar")
    for row in images:
        for role in ("src", "tgt"):
            assert np.array_equal(_decode(row[f"{role}_png"]), shard[(row["pair_id"], role)]), (row["pair_id"], role)
        assert _decode(row["adv_png"]).shape == (8, 8, 3)
    # every label equals a brute-force k-NN (k = 5) over the run's 8 clean images, all labelled
    # (pairs 0, 1, 3, 4: source label i % 3, target (i + 1) % 3);
    # the pair's own two never vote, so 6 of 8 may vote and 5 do
    embeddings = read_table(run_dir, "embeddings").to_pylist()
    bank: dict[str, tuple[np.ndarray, int]] = {}
    for r in embeddings:
        if r["role"] != "adv":
            vector = np.asarray(r["embedding"], dtype=np.float64)
            assert np.array_equal(bank.setdefault(r["key"], (vector, r["label"]))[0], vector)  # same in every unit
    assert len(bank) == 8 and sorted(label for _, label in bank.values()) == [0, 0, 1, 1, 1, 1, 2, 2]
    probed = {(r["unit_id"], r["pair_id"], r["eps"]): np.asarray(r["embedding"], dtype=np.float64)
              for r in embeddings if r["role"] == "adv"}
    all_labels = [r for r in read_table(run_dir, "labels").to_pylist()]
    assert len(all_labels) == (PAIRS - 1) * (ROWS_PER_PAIR["match"] + ROWS_PER_PAIR["perturb"])
    leave_out_matters = 0
    for row in all_labels:
        i = int(row["pair_id"].removeprefix("pair-"))
        own = {f"img-{2 * i}", f"img-{2 * i + 1}"}
        for column, query in (("knn_src", bank[f"img-{2 * i}"][0]), ("knn_tgt", bank[f"img-{2 * i + 1}"][0]),
                              ("knn_adv", probed[(row["unit_id"], row["pair_id"], row["eps"])])):
            assert row[column] == _brute_force_knn(query, bank, own, 5), (row["pair_id"], row["eps"], column)
            leave_out_matters += _brute_force_knn(query, bank, set(), 5) != row[column]
        assert (row["knn_bank_size"], row["knn_k"], row["knn_bank"]) == (6, 5, "run")
        assert row["knn_src_name"] is None  # the shards have no manifest with label names
    assert leave_out_matters > 0  # without the exclusion some label would differ


def test_embeddings_hold_each_clean_image_and_each_probed_row(unit_run: tuple[Path, list]) -> None:
    run_dir, _ = unit_run
    rows = read_table(run_dir, "embeddings").to_pylist()
    for probe in ("match", "perturb", "lipschitz"):
        mine = [r for r in rows if r["probe"] == probe]
        assert len([r for r in mine if r["role"] == "src"]) == len([r for r in mine if r["role"] == "tgt"]) == PAIRS - 1
        probed = [r for r in mine if r["role"] == "adv"]
        assert len(probed) == (0 if probe == "lipschitz" else (PAIRS - 1) * ROWS_PER_PAIR[probe])
        assert f"pair-{CORRUPT:06d}" not in {r["pair_id"] for r in mine}
    src = next(r for r in rows if r["role"] == "src" and r["pair_id"] == "pair-000000")
    assert src["key"] == "img-0" and src["label"] == 0 and len(src["embedding"]) == 16


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
    # bank (image keys a, b, c, d, f): p0 = (a, b), p1 = (c, b) shares p0's target, p2 = (d, f)
    bank = torch.stack([e[0], e[1], e[0] * 0.9 + e[2] * 0.1, e[2], e[3]])
    labels = torch.tensor([0, 1, 2, 2, 2])
    a, b, c, d, f = range(5)
    own = torch.tensor([[a, b]] * 3 + [[c, b]])
    queries = torch.stack([e[0], e[1], e[0], e[0] * 0.9 + e[2] * 0.1])  # p0 src, tgt, matched; p1 src
    votes = knn_vote(queries, bank, labels, own, k=5).labels
    # For p0 only c, d and f may vote (a and b are p0's own images): all labelled 2.
    assert votes[:3] == [2, 2, 2]
    # For p1, "b" (shared with p0) must not vote either: a (0), d (2), f (2) remain.
    assert votes[3] == 2

    # A bank larger than k (8 entries, k = 2), with an unlabelled copy of a (h) and a tied vote in
    # each answer; worked out by hand from the cosines (c 0.994, g 0.970 for p0's source e0; ...):
    #   p0 src e0: c (2), g (1) -> tie, nearest c -> 2        (a (0) would vote if not left out -> 0)
    #   p0 tgt e1: g (1), c (2, cosine 0 like a, at the lower position) -> 1   (b (3) would win -> 3)
    #   p0 matched 0.95 e0 + 0.05 e1: c (2), g (1) -> 2     (a -> 0)
    #   p1 src c: a (0), g (1) -> 0                          (c itself -> 2)
    #   p1 matched e1 + 0.3 e0: g (1), a (0) -> 1            (b, shared with p0 -> 3)
    bank = torch.stack([e[0], e[1], e[0] * 0.9 + e[2] * 0.1, e[2], e[3], e[0] * 0.8 + e[1] * 0.2, e[0],
                        e[0] * 0.7 + e[3] * 0.3])
    labels = torch.tensor([0, 3, 2, 2, 3, 1, -1, 3])
    a, b, c, d, f, g, h, i = range(8)
    queries = torch.stack([e[0], e[1], e[0] * 0.95 + e[1] * 0.05, e[0] * 0.9 + e[2] * 0.1, e[1] + 0.3 * e[0]])
    own = torch.tensor([[a, b]] * 3 + [[c, b]] * 2)
    votes = knn_vote(queries, bank, labels, own, k=2)
    assert votes.labels == [2, 1, 2, 0, 1]
    assert votes.bank_sizes == [5] * 5  # 8 entries less h (unlabelled) and the pair's two
    assert knn_vote(queries, bank, labels, k=2).labels == [0, 3, 0, 2, 3]  # what voting with them gives


def test_head_labels_carry_their_class_names(tmp_path: Path) -> None:
    """A classifier whose classes have names: every pred_* index gets its name beside it."""
    make_shards(tmp_path / "shards", 1, 2, size=32)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run",
                      models=[{"name": "tests.test_encoders:named_tiny_vit", "weights": "factory"}],
                      probes=[{"name": "match", "params": {"max_steps": 3}}])
    (unit,) = load_spec(spec).units
    run_unit(unit, EncoderCache("cpu"), str(tmp_path / "run"), run_id="run-1")
    rows = read_table(tmp_path / "run", "match").to_pylist()
    assert len(rows) == 2
    for row in rows:
        for role in ("src", "tgt", "adv"):
            assert row[f"pred_{role}"] is not None and row[f"pred_{role}_name"] == f"class {row[f'pred_{role}']}"
    # head: none for the same model: the unit loads it without its head labels
    spec = write_spec(tmp_path / "spec-none.yaml", str(tmp_path / "shards"), tmp_path / "run-none",
                      models=[{"name": "tests.test_encoders:named_tiny_vit", "weights": "factory", "head": "none"}],
                      probes=[{"name": "match", "params": {"max_steps": 3}}])
    (unit,) = load_spec(spec).units
    assert unit.head == "none"
    run_unit(unit, EncoderCache("cpu"), str(tmp_path / "run-none"), run_id="run-1")
    rows = read_table(tmp_path / "run-none", "match").to_pylist()
    assert len(rows) == 2 and all(row[f"pred_{role}"] is None for row in rows for role in ("src", "tgt", "adv"))


def test_a_unit_uses_the_cached_encoder_and_stamps_utc_times_and_its_worker(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit takes its encoder from the cache (no second copy), its times are UTC instants even
    where the local clock is not UTC, and with no worker named it is `host:pid`."""
    make_shards(tmp_path / "shards", 1, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run", gallery=0,
                      probes=[{"name": "match", "params": {"max_steps": 2, "log_every": 2}}])
    (unit,) = load_spec(spec).units
    cache = EncoderCache("cpu")
    encoder = cache.get(unit.model, unit.weights, unit.embed)
    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # UTC+05:45: a naive local time would be hours off
    time.tzset()
    try:
        before = datetime.now(timezone.utc)
        summary = run_unit(unit, cache, str(tmp_path / "run"), run_id="r")
        after = datetime.now(timezone.utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert list(cache._cache.values()) == [encoder]  # a cache hit, not a second load
    (row,) = read_table(tmp_path / "run", "units").to_pylist()
    assert before <= row["started_at"] <= row["finished_at"] <= after
    assert 0 < row["seconds"] == summary.seconds <= (after - before).total_seconds()
    assert summary.worker == row["worker"] == f"{socket.gethostname()}:{os.getpid()}"
    assert row["host"] == socket.gethostname() and row["device"] == "cpu"


def test_every_row_carries_its_pair_and_setting(unit_run: tuple[Path, list]) -> None:
    """The identity columns of every table, written out from the shard's metadata (pair i: images
    img-2i and img-2i+1, labels i % 3 and (i + 1) % 3) and the spec."""
    run_dir, summaries = unit_run
    units = {u.probe: u for u in load_spec(run_dir.parent / "spec.yaml").units}
    assert sorted(s.unit_id for s in summaries) == sorted(u.unit_id for u in units.values())
    for table in ("match", "perturb", "lipschitz", "pairs"):
        for row in read_table(run_dir, table).to_pylist():
            unit = units[row["probe"]]
            i = int(row["pair_id"].removeprefix("pair-"))
            assert (row["run_id"], row["unit_id"], row["model"], row["weights"], row["embed"], row["config_hash"]) == (
                "run-1", unit.unit_id, LINEAR, "factory", "pre_logits", unit.config_hash), (table, row["pair_id"])
            assert table == "pairs" or row["params"] == unit.params_json
            assert (row["src_key"], row["tgt_key"], row["src_label"], row["tgt_label"]) == (
                f"img-{2 * i}", f"img-{2 * i + 1}", i % 3, (i + 1) % 3), (table, row["pair_id"])
            assert (row["status"], row["error"] is None) == (("error", False) if i == CORRUPT else ("ok", True))
            if table == "pairs":
                assert row["shard"] == unit.shard
    for row in read_table(run_dir, "embeddings").to_pylist():
        unit = units[row["probe"]]
        assert (row["run_id"], row["unit_id"], row["model"], row["weights"], row["embed"], row["config_hash"]) == (
            "run-1", unit.unit_id, LINEAR, "factory", "pre_logits", unit.config_hash)
        i = int(row["pair_id"].removeprefix("pair-"))
        if row["role"] == "adv":
            assert row["key"] is None and row["label"] is None
            if row["probe"] == "match":
                assert row["eps"] is None
        else:
            j = 2 * i + (row["role"] == "tgt")
            assert (row["key"], row["label"], row["eps"]) == (f"img-{j}", (i + (row["role"] == "tgt")) % 3, None)
    perturb_eps = sorted({r["eps"] for r in read_table(run_dir, "embeddings").to_pylist()
                          if r["probe"] == "perturb" and r["role"] == "adv"})
    assert perturb_eps == pytest.approx([0.01, 0.03])
    for row in read_table(run_dir, "images").to_pylist():
        unit = units[row["probe"]]
        assert (row["run_id"], row["unit_id"], row["model"]) == ("run-1", unit.unit_id, LINEAR)
        assert row["variant"] == VARIANTS[row["probe"]], row


def test_the_unit_seed_reaches_the_probe(tmp_path: Path) -> None:
    """Perturb's random baseline draws from the unit's seed: seed 5 gives other draws than seed 0,
    and the same seed the same draws."""
    make_shards(tmp_path / "shards", 1, 2)
    baselines = []
    for run, seed in (("a", 0), ("b", 5), ("c", 5)):
        spec = write_spec(tmp_path / f"{run}.yaml", str(tmp_path / "shards"), tmp_path / run, gallery=0, seed=seed,
                          probes=[{"name": "perturb", "params": {"eps": [0.03], "steps": 1, "random_draws": 2}}])
        (unit,) = load_spec(spec).units
        assert unit.seed == seed
        run_unit(unit, EncoderCache("cpu"), str(tmp_path / run), run_id="r")
        baselines.append([r["random_disp"] for r in read_table(tmp_path / run, "perturb").sort_by("pair_id").to_pylist()])
    assert baselines[1] == baselines[2] and baselines[0] != baselines[1]
