"""The transfer pass (issue 23): matched images of model A on every model B of the run.

Two identical models (same encoder, two settings): the A x B matrix of target-closer rates is all
ones and the diagonal reproduces A's 8-bit re-check (quant_rel_dist, quant_cos). A model against
an unrelated one (another architecture and input size): every row equals a brute-force
recomputation from the stored PNG and the shard's images, and the named query's exact
intervals are scipy's Clopper-Pearson ones. No Ray: units run through run_unit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from analysis.db import open_runs
from analysis.named import run_named
from analysis.transfer import exact_interval, model_specific
from sweep.data.shards import read_pairs
from sweep.encoders import load_encoder
from sweep.finished.transfer import setting_of, transfer_run
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import LINEAR, make_shards, read_table, write_spec

MATCH = [{"name": "match", "params": {"max_steps": 60, "log_every": 10}}]
TINY_CLIP = "tests.support.tiny_models:tiny_clip_b"


def _run(tmp: Path, models: list[dict], pairs: int = 4) -> tuple[Path, object]:
    make_shards(tmp / "shards", 1, pairs)
    loaded = load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", models=models,
                                  probes=MATCH, transfer=True, gallery=0))
    cache = EncoderCache("cpu")
    for unit in loaded.units:
        assert run_unit(unit, cache, str(tmp / "run"), run_id="t").status == "ok"
    summary = transfer_run(RunStore(tmp / "run"), loaded, device="cpu")
    return tmp / "run", (loaded, summary)


def test_identical_models_give_an_all_ones_matrix_and_the_diagonal_reproduces_quant(tmp_path: Path) -> None:
    models = [{"name": LINEAR, "weights": "factory"}, {"name": LINEAR, "weights": "factory", "head": "none"}]
    run_dir, (loaded, summary) = _run(tmp_path, models)
    assert summary.n_units == 2 and summary.n_models == 2 and summary.n_rows == 2 * 2 * 4
    matched = read_table(run_dir, "matched")
    assert len(matched) == 8 and all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in matched.column("adv_png").to_pylist())
    rows = read_table(run_dir, "transfer").to_pylist()
    match = {(r["unit_id"], r["pair_id"]): r for r in read_table(run_dir, "match").to_pylist()}
    for r in rows:
        m = match[(r["unit_id"], r["pair_id"])]
        assert r["a_success"] == m["success"] and r["a_quant_success"] == m["quant_success"]
        # same encoder: B's view of the 8-bit image is A's quantised re-check, on and off the diagonal
        assert r["rel_dist_tgt"] == pytest.approx(m["quant_rel_dist"], rel=1e-5, abs=1e-7)
        assert r["cos_tgt"] == pytest.approx(m["quant_cos"], rel=1e-6)
        assert r["resized"] is False
    assert sum(r["same_setting"] for r in rows) == 8
    # B's k-NN labels of source and target are the labels pass's for the same setting (same bank,
    # same vote, the pair's own images left out)
    from sweep.finished.labels import label_run

    label_run(RunStore(run_dir))
    labelled = {(r[0], r[1]): r[2:] for r in open_runs([run_dir]).execute(
        "SELECT unit_id, pair_id, knn_src, knn_tgt FROM match WHERE status = 'ok'").fetchall()}
    diagonal = [r for r in rows if r["same_setting"]]
    assert all(r["knn_src"] is not None for r in diagonal)
    assert [(r["knn_src"], r["knn_tgt"]) for r in diagonal] == [labelled[(r["unit_id"], r["pair_id"])] for r in diagonal]
    con = open_runs([run_dir])
    matrix = run_named(con, "transfer", {"condition": "all"})
    assert len(matrix) == 4 and (matrix["n"] == 4).all()
    assert (matrix["target_closer_rate"] == 1.0).all(), matrix
    assert matrix["ci_high"].tolist() == [1.0] * 4
    assert matrix["ci_low"].tolist() == pytest.approx([exact_interval(4, 4)[0]] * 4)
    checks = model_specific(matrix.to_dict("records"), min_n=1)  # off the diagonal only
    # 4 of 4 target-closer: the exact interval [0.40, 1] contains 0.5 (too few to refute)
    assert [c["verdict"] for c in checks] == ["inconclusive", "inconclusive"]
    many = [{**c, "n": 40, "ci_low": exact_interval(40, 40)[0], "ci_high": 1.0} for c in matrix.to_dict("records")]
    assert [c["verdict"] for c in model_specific(many)] == ["not_supported", "not_supported"]


@pytest.fixture(scope="module")
def unrelated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A linear 8x8 encoder and an unrelated CLIP-shaped tiny ViT (16x16, zero-shot labels)."""
    models = [{"name": LINEAR, "weights": "factory"},
              {"name": TINY_CLIP, "weights": "factory", "text": "tiny:0", "classes": "file:" + _classes(tmp_path_factory)}]
    return _run(tmp_path_factory.mktemp("unrelated"), models, pairs=3)


def _classes(factory: pytest.TempPathFactory) -> str:
    path = factory.mktemp("classes") / "classes.txt"
    path.write_text("cat\ndog\nbird\n")
    return str(path)


def test_unrelated_model_matches_a_brute_force_recomputation(unrelated) -> None:
    run_dir, (loaded, summary) = unrelated
    rows = [r for r in read_table(run_dir, "transfer").to_pylist() if r["model_a"] == LINEAR and r["model"] == TINY_CLIP]
    assert len(rows) == 3 and all(r["resized"] and not r["same_setting"] for r in rows)
    matched = {r["pair_id"]: r for r in read_table(run_dir, "matched").to_pylist() if r["model"] == LINEAR}
    enc_a = load_encoder(LINEAR, "factory")
    enc_b = load_encoder(TINY_CLIP, "factory")
    [unit] = [u for u in loaded.units if u.model == LINEAR]
    shard = {p.pair_id: p for p in read_pairs(unit.shard, enc_a.preprocess, workers=0)}
    for r in rows:
        with Image.open(io.BytesIO(matched[r["pair_id"]]["adv_png"])) as img:
            adv = torch.tensor(np.asarray(img.convert("RGB")), dtype=torch.float32).permute(2, 0, 1) / 255
        images = torch.stack([shard[r["pair_id"]].src, shard[r["pair_id"]].tgt, adv])
        images = F.interpolate(images, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1)
        with torch.no_grad():
            e = enc_b.embed(images).double().numpy()
        src, tgt, a = e
        assert r["rel_dist_tgt"] == pytest.approx(np.linalg.norm(a - tgt) / np.linalg.norm(tgt), rel=1e-4)
        assert r["rel_dist_src"] == pytest.approx(np.linalg.norm(a - src) / np.linalg.norm(src), rel=1e-4)
        assert r["rel_dist_start"] == pytest.approx(np.linalg.norm(src - tgt) / np.linalg.norm(tgt), rel=1e-4)
        assert r["cos_tgt"] == pytest.approx(a @ tgt / np.linalg.norm(a) / np.linalg.norm(tgt), rel=1e-4)
        assert r["target_closer"] == bool(np.linalg.norm(a - tgt) < np.linalg.norm(a - src))
    con = open_runs([run_dir])
    matrix = run_named(con, "transfer", {"condition": "all"}).to_dict("records")
    cell = next(c for c in matrix if c["model_a"] == LINEAR and c["model_b"] == TINY_CLIP)
    k = sum(r["target_closer"] for r in rows)
    assert (cell["n"], cell["n_target_closer"]) == (3, k)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(exact_interval(k, 3))
    assert cell["setting_b"] == setting_of(loaded.spec.models[1])
    # filters: A's model, and the null spellings mean all
    assert len(run_named(con, "transfer", {"condition": "all", "model": LINEAR})) == 2
    assert run_named(con, "transfer", {"condition": "all", "model": "no-such-model"}).empty
    assert len(run_named(con, "transfer", {"condition": "all", "model": "null", "config_hash": ""})) == 4


def test_exact_interval_is_clopper_pearson() -> None:
    from scipy.stats import beta

    low, high = exact_interval(3, 10, 0.95)
    assert low == pytest.approx(beta.ppf(0.025, 3, 8)) and high == pytest.approx(beta.ppf(0.975, 4, 7))
    assert exact_interval(0, 0) == (None, None)


def test_zero_shot_labels_of_b_and_the_report_and_dashboard_show_the_matrix(unrelated, tmp_path: Path,
                                                                           open_app) -> None:
    run_dir, _ = unrelated
    rows = read_table(run_dir, "transfer").to_pylist()
    on_clip = [r for r in rows if r["model"] == TINY_CLIP]
    assert on_clip and all(r["zs_adv_name"] in ("cat", "dog", "bird") and r["zs_prob_adv"] > 1 / 3 for r in on_clip)
    assert all(r["zs_adv"] is None for r in rows if r["model"] == LINEAR)  # no text: for the linear model
    clip_match = [r for r in read_table(run_dir, "match").to_pylist() if r["model"] == TINY_CLIP]
    assert clip_match and all(r["zs_src_name"] is not None for r in clip_match)
    from analysis.report import write_report

    paths = write_report([run_dir], tmp_path / "report")
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert 'id="transfer"' in html and "data:image/png;base64" in html.split('id="transfer"')[1]
    assert "## Transfer" in md and (tmp_path / "report" / "transfer_matrix.png").stat().st_size > 1000
    import json

    assert len(json.loads(paths["json"].read_text())["transfer"]) == 2  # the two off-diagonal cells
    at = open_app(run_dir, page="transfer")
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Transfer"]
    table = next(d.value for d in at.dataframe if "target_closer_rate" in d.value.columns)
    assert len(table) == len(run_named(open_runs([run_dir]), "transfer", {}))


def test_replay_of_transfer_rows_agrees(unrelated) -> None:
    from sweep.finished.transfer import replay_transfer

    run_dir, (loaded, _) = unrelated
    assert replay_transfer(RunStore(run_dir), loaded, "pair-000001", device="cpu") == []
