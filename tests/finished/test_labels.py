"""The labels pass: k-NN labels against the whole run's bank (or a reference shard set), checked
against a brute-force k-NN written here in numpy; one file per probe and setting, replaced on rerun;
the analysis views show the labels on match and perturb rows.

The run's units hold 2 pairs each. Its images include exact duplicates under different keys
and labels (ties in similarity), images without a label, and images shared by several pairs.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from analysis.db import open_runs
from sweep.errors import UserError
from sweep.finished.labels import label_run
from sweep.run.spec import load_spec
from sweep.run.worker import EncoderCache, run_unit
from tests.support.cli_inproc import run_cli
from tests.support.sweeps import REPO, read_table, write_spec
from tests.support.encoders import LinearEncoder

K = 4
PROBES = [
    {"name": "match", "params": {"max_steps": 8, "log_every": 4}},
    {"name": "perturb", "params": {"eps": [0.01, 0.05], "steps": 2, "random_draws": 1}},
]
LABEL_NAMES = {0: "zero", 1: "one", 2: "two", 3: "three"}


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_set(seed: int, n: int, prefix: str) -> dict[str, tuple[np.ndarray, int | None]]:
    """`n` images key -> (uint8 pixels (8, 8, 3), label or None); the last three are copies of
    the first two under other keys and labels, and every fifth image has no label."""
    rng = np.random.default_rng(seed)
    images: dict[str, tuple[np.ndarray, int | None]] = {}
    for i in range(n - 3):
        images[f"{prefix}{i:02d}"] = (rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), None if i % 5 == 4 else i % 4)
    first, second = images[f"{prefix}00"][0], images[f"{prefix}01"][0]
    images[f"{prefix}d0"] = (first, 3)  # same pixels as image 00 (label 0): an exact tie, another label
    images[f"{prefix}d1"] = (first, 2)
    images[f"{prefix}d2"] = (second, None)
    return images


def _write_set(folder: Path, images: dict[str, tuple[np.ndarray, int | None]], pairs: list[tuple[str, str]],
               per_shard: int, prefix: str = "pair") -> None:
    folder.mkdir(parents=True)
    for s in range(0, len(pairs), per_shard):
        with tarfile.open(folder / f"pairs-{s // per_shard:06d}.tar", "w") as tar:
            for i in range(s, min(s + per_shard, len(pairs))):
                src, tgt = pairs[i]
                key = f"{prefix}_{i:08d}"
                meta = {"pair_id": key, "src_key": src, "tgt_key": tgt,
                        "src_label": images[src][1], "tgt_label": images[tgt][1]}
                for name, data in ((f"{key}.json", json.dumps(meta).encode()),
                                   (f"{key}.src.png", _png(images[src][0])), (f"{key}.tgt.png", _png(images[tgt][0]))):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    manifest = {"format": "vitsweep-pairs", "label_names": {str(k): v for k, v in LABEL_NAMES.items()},
                "shards": [{"name": p.name} for p in sorted(folder.glob("*.tar"))]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _embed(pixels: np.ndarray) -> np.ndarray:
    """The linear test encoder, independently of the engine: (8, 8, 3) uint8 -> (16,) float64."""
    weight = LinearEncoder().weight.detach().double().numpy()  # (16, 192)
    x = pixels.astype(np.float64).transpose(2, 0, 1).reshape(-1) / 255.0
    return weight @ x


def brute_force_knn(query: np.ndarray, bank: dict[str, tuple[np.ndarray, int | None]], leave_out: set[str],
                    k: int) -> tuple[int | None, int]:
    """(label, bank size): majority over the k nearest labelled bank images by cosine, none of
    `leave_out` voting; equal similarity ordered by key, a tied vote to the nearest voter."""
    candidates = []
    for key in sorted(bank):
        vector, label = bank[key]
        if label is None or key in leave_out:
            continue
        cos = float(query @ vector) / (np.linalg.norm(query) * np.linalg.norm(vector))
        candidates.append((-cos, key, label))
    candidates.sort(key=lambda c: (c[0], c[1]))
    voters = [label for _, _, label in candidates[:k]]
    if not voters:
        return None, len(candidates)
    counts = Counter(voters)
    best = max(counts.values())
    return next(v for v in voters if counts[v] == best), len(candidates)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("labels")
    images = _image_set(0, 15, "img")
    keys = sorted(images)
    rng = np.random.default_rng(1)
    pairs = [(keys[i], keys[j]) for i, j in (rng.choice(len(keys), 2, replace=False) for _ in range(8))]
    pairs[1] = ("img00", "imgd0")  # a pair whose source and target are the same picture
    _write_set(tmp / "shards", images, pairs, per_shard=2)
    spec = write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", probes=PROBES, knn_k=K, gallery=0)
    loaded = load_spec(spec)
    (tmp / "run").mkdir()
    (tmp / "run" / "spec.yaml").write_text(loaded.to_yaml())  # what `vitsweep run` leaves: the pass reads knn_k
    cache = EncoderCache("cpu")
    for unit in loaded.units:
        run_unit(unit, cache, str(tmp / "run"), run_id="run-1")
    summary = label_run(tmp / "run")
    used = {key for pair in pairs for key in pair}
    return {"dir": tmp / "run", "tmp": tmp, "images": images, "pairs": pairs, "used": used, "summary": summary,
            "units": loaded.units}


def _stored(run_dir: Path) -> dict[tuple[str, str, str, Any], np.ndarray]:
    table = read_table(run_dir, "embeddings").to_pylist()
    return {(r["unit_id"], r["pair_id"], r["role"], r["eps"]): np.asarray(r["embedding"], dtype=np.float64) for r in table}


def test_units_hold_two_pairs_and_store_fp16_embeddings_of_their_images(run: dict[str, Any]) -> None:
    units = read_table(run["dir"], "units").to_pylist()
    assert len(units) == 8 and {u["n_pairs"] for u in units} == {2}
    embeddings = read_table(run["dir"], "embeddings")
    assert embeddings.schema.field("embedding").type.value_type == pa.float16()
    for row in embeddings.to_pylist():
        if row["role"] == "adv":
            assert row["key"] is None and len(row["embedding"]) == 16
            continue
        pixels, label = run["images"][row["key"]]
        want = _embed(pixels)
        assert row["label"] == label
        assert np.allclose(np.asarray(row["embedding"], dtype=np.float64), want, rtol=2e-3, atol=2e-3)
    per_unit = Counter((r["unit_id"], r["role"]) for r in embeddings.to_pylist())
    for unit in run["units"]:
        assert per_unit[(unit.unit_id, "src")] == per_unit[(unit.unit_id, "tgt")] == 2
        assert per_unit[(unit.unit_id, "adv")] == 2 * (1 if unit.probe == "match" else 2)


def test_knn_labels_equal_a_brute_force_knn_over_the_whole_run(run: dict[str, Any]) -> None:
    stored = _stored(run["dir"])
    # The bank: every clean image the run embedded, once, with the stored (fp16) vector.
    bank: dict[str, tuple[np.ndarray, int | None]] = {}
    for row in read_table(run["dir"], "embeddings").to_pylist():
        if row["role"] != "adv":
            bank.setdefault(row["key"], (np.asarray(row["embedding"], dtype=np.float64), row["label"]))
    assert set(bank) == run["used"]
    labelled = sum(1 for _, label in bank.values() if label is not None)
    assert labelled > K + 2 and labelled < len(bank)  # bigger than k, with unlabelled images

    pairs = {f"pair_{i:08d}": pair for i, pair in enumerate(run["pairs"])}
    rows = read_table(run["dir"], "labels").to_pylist()
    assert len(rows) == 8 * 1 + 8 * 2  # a match row per pair, a perturb row per pair and eps
    assert len({(r["unit_id"], r["pair_id"], r["eps"]) for r in rows}) == len(rows)
    vote_ties = distance_ties = 0
    for row in rows:
        src_key, tgt_key = pairs[row["pair_id"]]
        own = {src_key, tgt_key}
        for column, query in (("knn_src", bank[src_key][0]), ("knn_tgt", bank[tgt_key][0]),
                              ("knn_adv", stored[(row["unit_id"], row["pair_id"], "adv", row["eps"])])):
            want, size = brute_force_knn(query, bank, own, K)
            assert row[column] == want, (row["pair_id"], column)
            if column == "knn_adv":
                assert row["knn_bank_size"] == size
            nearest = sorted((-float(query @ v) / np.linalg.norm(query) / np.linalg.norm(v), lab)
                             for key, (v, lab) in bank.items() if lab is not None and key not in own)[:K]
            counts = sorted(Counter(lab for _, lab in nearest).values(), reverse=True)
            vote_ties += len(counts) > 1 and counts[0] == counts[1]
            distance_ties += len({round(s, 12) for s, _ in nearest}) < len(nearest)
        assert row["knn_k"] == K and row["knn_bank"] == "run"
        assert row["knn_src_name"] == LABEL_NAMES.get(row["knn_src"])
        assert row["knn_adv_name"] == LABEL_NAMES.get(row["knn_adv"])
    assert vote_ties > 0 and distance_ties > 0  # the tie rules were exercised
    # a unit's own images (at most 4) could never give these bank sizes
    assert min(r["knn_bank_size"] for r in rows) >= labelled - 2 > 4


def test_views_show_the_labels_and_a_rerun_replaces_them(run: dict[str, Any]) -> None:
    run_dir = run["dir"]
    files = sorted(p.relative_to(run_dir) for p in (run_dir / "results" / "labels").rglob("*.parquet"))
    assert len(files) == 2  # one per probe for the one model setting
    labels = {(r["unit_id"], r["pair_id"], r["eps"]): r for r in read_table(run_dir, "labels").to_pylist()}
    con = open_runs([run_dir])
    for table, eps in (("match", "NULL"), ("perturb", "eps")):
        got = con.execute(
            f"SELECT unit_id, pair_id, {eps}, knn_src, knn_tgt, knn_adv, knn_adv_name, knn_bank_size FROM {table}"
        ).fetchall()
        assert len(got) == (8 if table == "match" else 16)
        for unit_id, pair_id, e, *values in got:
            want = labels[(unit_id, pair_id, e)]
            assert values == [want[c] for c in ("knn_src", "knn_tgt", "knn_adv", "knn_adv_name", "knn_bank_size")]
    before = con.execute("SELECT count(*) FROM match").fetchall()
    label_run(run_dir)  # again: same files, same rows, nothing added
    assert sorted(p.relative_to(run_dir) for p in (run_dir / "results" / "labels").rglob("*.parquet")) == files
    assert read_table(run_dir, "labels").num_rows == len(labels)
    assert open_runs([run_dir]).execute("SELECT count(*) FROM match").fetchall() == before
    note = json.loads((run_dir / "labels.json").read_text())
    assert note["knn"]["k"] == K and note["settings"][0]["bank_images"] == len(run["used"])
    assert note["settings"][0]["head"] == {"label_set": None, "note": "the factory's module has no `classifier`"}


def test_a_reference_bank_is_used_instead_of_the_run(run: dict[str, Any], tmp_path: Path) -> None:
    reference = _image_set(5, 10, "ref")
    keys = sorted(reference)
    _write_set(tmp_path / "reference", reference, [(keys[i], keys[i + 5]) for i in range(5)], per_shard=3, prefix="r")
    summary = label_run(run["dir"], k=3, bank=str(tmp_path / "reference"))
    assert summary.settings[0].bank_images == len(reference)
    bank = {key: (_embed(pixels).astype(np.float16).astype(np.float64), label) for key, (pixels, label) in reference.items()}
    stored = _stored(run["dir"])
    pairs = {f"pair_{i:08d}": pair for i, pair in enumerate(run["pairs"])}
    rows = read_table(run["dir"], "labels").to_pylist()
    for row in rows:
        assert row["knn_k"] == 3 and row["knn_bank"] == str(tmp_path / "reference")
        query = stored[(row["unit_id"], row["pair_id"], "adv", row["eps"])]
        want, size = brute_force_knn(query, bank, set(pairs[row["pair_id"]]), 3)
        assert (row["knn_adv"], row["knn_bank_size"]) == (want, size)
        want_src, _ = brute_force_knn(stored[(row["unit_id"], row["pair_id"], "src", None)], bank, set(), 3)
        assert row["knn_src"] == want_src
    cached = list((run["dir"] / "results" / "embeddings" / "probe=_reference").rglob("*.parquet"))
    assert len(cached) == 1
    label_run(run["dir"], k=3, bank=str(tmp_path / "reference"))  # from the cache: same labels
    assert read_table(run["dir"], "labels").to_pylist() == rows
    label_run(run["dir"])  # back to the spec's bank for the other tests


def test_labels_of_a_run_without_finished_units_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    with pytest.raises(UserError, match="no finished units"):
        label_run(tmp_path)


def test_labels_command_redoes_the_pass_and_refuses_bad_input(run: dict[str, Any], tmp_path: Path) -> None:
    def vitsweep(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sweep.cli", "labels", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=300)

    def here(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("labels", *args, cwd=REPO)

    before = sorted(p.relative_to(run["dir"]) for p in (run["dir"] / "results" / "labels").rglob("*.parquet"))
    done = vitsweep(str(run["dir"]), "--k", "3")
    assert done.returncode == 0, done.stderr
    assert "24 rows labelled by 3-NN over" in done.stdout
    assert {r["knn_k"] for r in read_table(run["dir"], "labels").to_pylist()} == {3}
    assert sorted(p.relative_to(run["dir"]) for p in (run["dir"] / "results" / "labels").rglob("*.parquet")) == before
    # the first refusal as a user meets it (a subprocess), the others through the same entry point
    # in this process (tests/support/cli_inproc.py), which would otherwise spend their time importing torch
    for args, message, how in (([str(tmp_path / "nope")], "run directory not found", vitsweep),
                               ([str(run["dir"]), "--bank", str(tmp_path / "nope")], "knn_bank: no such shard", here),
                               ([str(run["dir"]), "--k", "0"], "--k must be at least 1", here),
                               ([str(run["dir"]), "--device", "cuda:7"], "no such CUDA device", here)):
        bad = how(*args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    label_run(run["dir"])  # back to the spec's k


def test_the_worker_no_longer_labels_rows_itself(run: dict[str, Any]) -> None:
    for table in ("match", "perturb"):
        assert all(r["knn_adv"] is None for r in read_table(run["dir"], table).to_pylist())


def test_the_summary_and_the_note_say_what_was_labelled(run: dict[str, Any]) -> None:
    summary = label_run(run["dir"])
    n_images = len(run["used"])
    n_labelled = sum(1 for key in run["used"] if run["images"][key][1] is not None)
    assert (summary.k, summary.bank) == (K, "run")
    assert sorted(summary.files) == sorted(
        str(p.relative_to(run["dir"])) for p in (run["dir"] / "results" / "labels").rglob("*.parquet"))
    assert sorted(f.split("/")[2] for f in summary.files) == ["probe=match", "probe=perturb"]
    (setting,) = summary.settings
    model = "tests.support.encoders:linear_encoder"
    assert (setting.model, setting.weights, setting.embed, setting.bank) == (model, "factory", "pre_logits", "run")
    assert (setting.bank_images, setting.bank_labelled, setting.rows, setting.skipped) == (n_images, n_labelled, 24, None)
    assert summary.describe() == (
        f"{model} [factory, pre_logits]: 24 rows labelled by {K}-NN over {n_labelled} labelled of {n_images} "
        "images (run); head labels: none (the factory's module has no `classifier`)")
    note = json.loads((run["dir"] / "labels.json").read_text())
    assert note["knn"]["k"] == K and note["knn"]["bank"] == "run"
    (noted,) = note["settings"]
    assert {key: noted[key] for key in ("model", "weights", "embed", "bank", "bank_images", "bank_labelled",
                                        "rows", "skipped")} == {
        "model": model, "weights": "factory", "embed": "pre_logits", "bank": "run", "bank_images": n_images,
        "bank_labelled": n_labelled, "rows": 24, "skipped": None}


def test_units_without_stored_embeddings_get_no_labels_and_lose_stale_ones(run: dict[str, Any], tmp_path: Path) -> None:
    """Units written before embeddings were stored: the setting is skipped with the reason, and
    label files of an earlier pass are removed rather than left standing."""
    import shutil

    old = tmp_path / "old"
    for table in ("units", "labels"):
        shutil.copytree(run["dir"] / "results" / table, old / "results" / table)
    summary = label_run(old, k=3)
    (setting,) = summary.settings
    assert setting.skipped == ("its units stored no embeddings (written by an older vitsweep): rerun them to get "
                               "k-NN labels")
    assert (setting.bank_images, setting.bank_labelled, setting.rows, summary.files) == (0, 0, 0, [])
    assert list((old / "results" / "labels").rglob("*.parquet")) == []
    assert summary.describe().endswith("no k-NN labels (its units stored no embeddings (written by an older "
                                       "vitsweep): rerun them to get k-NN labels); head labels: none (the factory's "
                                       "module has no `classifier`)")


def test_a_missing_reference_bank_is_a_user_error_naming_knn_bank(run: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^knn_bank: no such shard: .*nope"):
        label_run(run["dir"], bank=str(tmp_path / "nope" / "pairs-000000.tar"))


def test_each_reference_set_has_its_own_cached_embeddings(run: dict[str, Any], tmp_path: Path) -> None:
    """The cache file is named by setting and bank, reused as it is on the next pass (not rewritten),
    and a second reference set is embedded afresh instead of being served the first one's cache."""
    import re

    first, second = _image_set(7, 8, "one"), _image_set(8, 9, "two")
    for name, images in (("first", first), ("second", second)):
        keys = sorted(images)
        _write_set(tmp_path / name, images, [(keys[i], keys[i + 4]) for i in range(len(keys) - 4)], per_shard=2,
                   prefix=name)
    cache_dir = run["dir"] / "results" / "embeddings" / "probe=_reference"
    before = set(cache_dir.rglob("*.parquet"))
    assert label_run(run["dir"], k=3, bank=str(tmp_path / "first")).settings[0].bank_images == len(first)
    (cached,) = set(cache_dir.rglob("*.parquet")) - before
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{16}\.parquet", cached.name), cached.name
    stamp = (cached.stat().st_ino, cached.stat().st_mtime_ns)
    assert label_run(run["dir"], k=3, bank=str(tmp_path / "first")).settings[0].bank_images == len(first)
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == stamp  # read, not rewritten
    assert label_run(run["dir"], k=3, bank=str(tmp_path / "second")).settings[0].bank_images == len(second)
    assert len(set(cache_dir.rglob("*.parquet")) - before) == 2
    label_run(run["dir"])  # back to the spec's bank for the other tests


def test_describe_gives_one_line_per_setting_with_its_head() -> None:
    from sweep.finished.labels import LabelsSummary, SettingSummary

    summary = LabelsSummary(k=3, bank="shards/ref", files=[], settings=[
        SettingSummary("vit_a", "timm", "pre_logits", "shards/ref", 10, 8, 6, head={"label_set": "imagenet-1k"}),
        SettingSummary("vit_b", "random:0", "block:3", "shards/ref", 0, 0, 0, head={}, skipped="no embeddings"),
        SettingSummary("vit_c", "random:1", "pre_logits", "shards/ref", 4, 4, 2, head={"label_set": None, "note": "no head"}),
    ])
    assert summary.describe() == (
        "vit_a [timm, pre_logits]: 6 rows labelled by 3-NN over 8 labelled of 10 images (shards/ref); head labels: imagenet-1k\n"
        "vit_b [random:0, block:3]: no k-NN labels (no embeddings); head labels: none ()\n"
        "vit_c [random:1, pre_logits]: 2 rows labelled by 3-NN over 4 labelled of 4 images (shards/ref); head labels: none (no head)")
