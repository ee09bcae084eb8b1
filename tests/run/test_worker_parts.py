"""The worker's small parts, without running a unit: the encoder cache (least recently used
dropped), the done-marker row, which error a pair reports, the unit's embeddings and gallery
image rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import torch

from sweep.data.images import to_png_bytes
from sweep.encoders import default_device
from sweep.probes.base import PairResult
from sweep.run.spec import WorkUnit
from sweep.run.worker import (EncoderCache, UnitSummary, _embeddings_table, _image_rows, _pair_error, _Pair,
                              _Unit, embeddings_table, units_row)
from sweep.schema import SCHEMAS

LINEAR = "tests.support.encoders:linear_encoder"


def test_encoder_cache_keeps_the_most_recently_used() -> None:
    cache = EncoderCache("cpu", size=2)
    a = cache.get(LINEAR, "random:1", "pre_logits")
    b = cache.get(LINEAR, "random:2", "pre_logits")
    assert cache.get(LINEAR, "random:1", "pre_logits") is a  # a hit, and a is now the most recent
    c = cache.get(LINEAR, "random:3", "pre_logits")  # drops b, the least recently used
    assert cache.get(LINEAR, "random:1", "pre_logits") is a and cache.get(LINEAR, "random:3", "pre_logits") is c
    assert cache.get(LINEAR, "random:2", "pre_logits") is not b  # b was dropped: loaded afresh
    assert len(cache._cache) == 2 and cache.describe() == "cpu"
    assert a.weights == "random:1" and c.weights == "random:3" and str(a.device) == "cpu"


def test_units_row() -> None:
    unit = WorkUnit(unit_id="u1", model="m", weights="w", embed="pre_logits", probe="match", params={"x": 1},
                    params_json='{"x": 1}', config_hash="c", shard="s.tar", seed=0, batch_size=4, gallery=1)
    start, end = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc)
    summary = UnitSummary("u1", "ok", n_pairs=5, n_ok=4, n_error=1, seconds=2.5, attempts=2,
                          worker="node-7:1234", device="cpu", input_dim=3 * 8 * 8, embed_dim=16)
    row = units_row(unit, "run", summary, start, end)
    assert row == {
        "run_id": "run", "unit_id": "u1", "model": "m", "weights": "w", "embed": "pre_logits", "probe": "match",
        "config_hash": "c", "params": '{"x": 1}', "shard": "s.tar", "status": "ok", "error": None, "attempts": 2,
        "n_pairs": 5, "n_ok": 4, "n_error": 1, "started_at": start, "finished_at": end, "seconds": 2.5,
        "worker": "node-7:1234", "host": "node-7", "device": "cpu", "batch_size": 4,
        "seed": 0, "head": unit.head, "input_dim": 192, "embed_dim": 16,
    }
    failed = units_row(unit, "run", UnitSummary("u1", "error", error="boom", attempts=3), None, end)
    assert (failed["status"], failed["error"], failed["attempts"], failed["host"], failed["started_at"]) == (
        "error", "boom", 3, None, None)


@pytest.mark.parametrize(("decode", "result", "want"), [
    ("not a readable image", None, "not a readable image"),
    ("not a readable image", PairResult("p", rows=[], error="probe failed"), "not a readable image"),
    (None, None, "the probe returned no result for this pair"),
    (None, PairResult("p", rows=[], error="non-finite cos"), "non-finite cos"),
    (None, PairResult("p", rows=[{}]), None),
])
def test_which_error_a_pair_reports(decode: str | None, result: PairResult | None, want: str | None) -> None:
    pair = _Pair(0, "p", "s", "t", 1, 2, error=decode, result=result)
    assert _pair_error(pair) == want


def test_encoder_cache_defaults_to_two_encoders_on_the_default_device() -> None:
    cache = EncoderCache()
    assert cache.device == default_device()
    a = cache.get(LINEAR, "random:1", "pre_logits")
    cache.get(LINEAR, "random:2", "pre_logits")
    cache.get(LINEAR, "random:3", "pre_logits")  # a third encoder drops the first
    assert cache.get(LINEAR, "random:1", "pre_logits") is not a


def _unit() -> WorkUnit:
    return WorkUnit(unit_id="u1", model="m", weights="w", embed="pre_logits", probe="perturb", params={},
                    params_json="{}", config_hash="c", shard="s.tar", seed=0, batch_size=4, gallery=2)


def test_embeddings_rows_skip_failed_pairs_and_key_unkeyed_images_by_shard_and_pair() -> None:
    clean = {"src": torch.tensor([1.0, 2.0]), "tgt": torch.tensor([3.0, 4.0])}
    ok = _Pair(0, "p0", "img/a", None, 5, None, result=PairResult(
        "p0", rows=[{"eps": 0.5}, {"eps": 1.0}], embeddings=clean, row_embeddings=[torch.tensor([5.0, 6.0]), None]))
    # a probe failure after the clean embeddings were taken (e.g. the NaN check): no rows at all
    diverged = _Pair(1, "p1", "img/b", "img/c", 1, 2, result=PairResult(
        "p1", rows=[], error="non-finite cos", embeddings=clean))
    setting = {"run_id": "run", "unit_id": "u1", "model": "m", "weights": "w", "embed": "pre_logits",
               "probe": "perturb", "config_hash": "c"}
    table = _embeddings_table(_unit(), "run", [ok, diverged], wants_probed=True)
    assert table.to_pylist() == [
        {**setting, "pair_id": "p0", "role": "src", "key": "img/a", "label": 5, "eps": None, "embedding": [1.0, 2.0]},
        {**setting, "pair_id": "p0", "role": "tgt", "key": "s.tar#p0.tgt", "label": None, "eps": None,
         "embedding": [3.0, 4.0]},
        {**setting, "pair_id": "p0", "role": "adv", "key": None, "label": None, "eps": 0.5, "embedding": [5.0, 6.0]},
    ]
    unprobed = _embeddings_table(_unit(), "run", [ok], wants_probed=False)
    assert unprobed.column("role").to_pylist() == ["src", "tgt"]


def test_image_rows_are_written_for_ok_gallery_pairs_only() -> None:
    src, adv, tgt = torch.zeros(3, 2, 2), torch.full((3, 2, 2), 0.5), torch.ones(3, 2, 2)
    state = _Unit()
    # a gallery pair whose probe failed keeps its images in the result, but gets no image row
    state.pairs["p0"] = _Pair(0, "p0", "a", "b", None, None, result=PairResult(
        "p0", rows=[], error="non-finite cos", images={"src": src, "tgt": tgt}))
    state.pairs["p1"] = _Pair(1, "p1", "c", "d", None, None, result=PairResult(
        "p1", rows=[{}], images={"src": src, "adv": adv, "tgt": tgt, "delta": adv}, extra={"image_variant": "best"}))
    state.pairs["p2"] = _Pair(2, "p2", "e", "f", None, None, result=PairResult("p2", rows=[{}], images={"tgt": tgt}))
    state.gallery_ids = ["p0", "p1", "p2"]
    rows = _image_rows(_unit(), "run", state)
    common = {"run_id": "run", "unit_id": "u1", "model": "m", "probe": "perturb"}
    assert rows == [
        {**common, "pair_id": "p1", "variant": "best", "src_png": to_png_bytes(src), "adv_png": to_png_bytes(adv),
         "tgt_png": to_png_bytes(tgt)},
        {**common, "pair_id": "p2", "variant": "", "src_png": None, "adv_png": None, "tgt_png": to_png_bytes(tgt)},
    ]


def test_embeddings_table_of_no_rows_and_of_one_dimensional_embeddings() -> None:
    empty = embeddings_table([], [])
    assert empty.num_rows == 0 and empty.schema == SCHEMAS["embeddings"]
    rows = [{"run_id": "r", "unit_id": "u", "pair_id": p, "role": "src", "model": "m", "weights": "w",
             "probe": "match", "config_hash": "c"} for p in ("p0", "p1")]
    table = embeddings_table(rows, [torch.tensor([1.5]), torch.tensor([-2.0])])
    assert table.schema == SCHEMAS["embeddings"] and table.column("embedding").to_pylist() == [[1.5], [-2.0]]
