"""The worker's small parts, without running a unit: the encoder cache (least recently used
dropped), the done-marker row, which error a pair reports."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sweep.probes.base import PairResult
from sweep.run.spec import WorkUnit
from sweep.run.worker import EncoderCache, UnitSummary, _pair_error, _Pair, units_row

LINEAR = "tests.encoders_for_tests:linear_encoder"


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
                          worker="node-7:1234", device="cpu")
    row = units_row(unit, "run", summary, start, end)
    assert row == {
        "run_id": "run", "unit_id": "u1", "model": "m", "weights": "w", "embed": "pre_logits", "probe": "match",
        "config_hash": "c", "params": '{"x": 1}', "shard": "s.tar", "status": "ok", "error": None, "attempts": 2,
        "n_pairs": 5, "n_ok": 4, "n_error": 1, "started_at": start, "finished_at": end, "seconds": 2.5,
        "worker": "node-7:1234", "host": "node-7", "device": "cpu", "batch_size": 4,
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
