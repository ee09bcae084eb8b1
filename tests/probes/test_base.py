"""More of the probe contract (sweep/probes/base.py): pairs refused on the way in are never lost
(also when every pair is refused, or refused pairs come after the probe's last result), the NaN
check names the first non-finite column, setting ids are pinned, and a parameter error that
belongs to no single field still reads as one line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch

from sweep.errors import UserError
from sweep.probes import build_probe
from sweep.probes.base import PairInput, PairResult, Probe, ProbeParams


class _Enc:
    input_size = (3, 2, 2)


class RowsParams(ProbeParams):
    nan_keys: tuple[str, ...] = ()  # row i gets NaN in nan_keys[i] ("" = none)


class RowsProbe(Probe):
    """One result per pair, yielded as soon as its pair arrives; row i has NaN in nan_keys[i]."""

    name: ClassVar[str] = "rows"
    Params: ClassVar[type[ProbeParams]] = RowsParams

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        for pair in pairs:
            rows = []
            for key in self.params.nan_keys or ("",):
                row = {"a": 1.0, "b": 2.0, "n": 3}
                if key:
                    row[key] = float("nan")
                rows.append(row)
            yield PairResult(pair.pair_id, rows=rows)


def _pair(pair_id: str, value: float = 0.5) -> PairInput:
    return PairInput(pair_id, torch.full((3, 2, 2), value), torch.full((3, 2, 2), 0.5))


def test_refused_pairs_are_never_lost() -> None:
    probe = RowsProbe(RowsParams())
    only_bad = list(probe.run(_Enc(), [_pair("x", 2.0), _pair("y", -1.0)]))
    assert [(r.pair_id, r.error) for r in only_bad] == [("x", "source pixels outside [0, 1]"), ("y", "source pixels outside [0, 1]")]
    # a refused pair after the last good one (the probe yields as it goes)
    got = list(probe.run(_Enc(), [_pair("a"), _pair("b"), _pair("z", 9.0)]))
    assert [(r.pair_id, r.error) for r in got] == [("a", None), ("b", None), ("z", "source pixels outside [0, 1]")]
    assert list(probe.run(_Enc(), [])) == []


def test_the_nan_check_names_the_first_non_finite_column() -> None:
    (result,) = list(RowsProbe(RowsParams(nan_keys=("", "a", "b"))).run(_Enc(), [_pair("p")]))
    assert result.error == "non-finite a (the embedding diverged)" and result.rows == []
    (result,) = list(RowsProbe(RowsParams(nan_keys=("b", "a"))).run(_Enc(), [_pair("p")]))
    assert result.error == "non-finite b (the embedding diverged)" and result.rows == []
    (result,) = list(RowsProbe(RowsParams(nan_keys=("", ""))).run(_Enc(), [_pair("p")]))
    assert result.error is None and result.rows == [{"a": 1.0, "b": 2.0, "n": 3}] * 2


def test_config_hash_is_pinned() -> None:
    """The setting id names stored results: it must not change between versions."""
    probe = RowsProbe.from_mapping({"nan_keys": ["a"]})
    assert probe.params_json() == '{"nan_keys": ["a"]}'
    want = hashlib.sha256(json.dumps(["rows", '{"nan_keys": ["a"]}', "m", "w"]).encode()).hexdigest()[:16]
    assert probe.config_hash("m", "w") == want
    assert build_probe("match", {}).config_hash("model", "weights", "pre_logits") == "adf1ea5c07f0943b"


def test_a_parameter_error_of_the_whole_setting_is_one_line() -> None:
    with pytest.raises(UserError) as info:
        build_probe("match", {"preset": "paper", "eps": 0.1})
    assert str(info.value) == ("bad match parameter ?={'preset': 'paper', 'eps': 0.1}: "
                               "Value error, the paper preset has no eps-ball (use preset=default)")


class _RecordingProbe(RowsProbe):
    """RowsProbe that remembers the batch size and seed `run` handed to `_run`."""

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        self.calls = [*getattr(self, "calls", []), (batch_size, seed)]
        yield from super()._run(encoder, pairs, batch_size=batch_size, seed=seed)


def test_run_hands_its_batch_size_and_seed_to_the_probe() -> None:
    probe = _RecordingProbe(RowsParams())
    list(probe.run(_Enc(), [_pair("a")]))
    list(probe.run(_Enc(), [_pair("a")], batch_size=3, seed=7))
    assert probe.calls == [(16, 0), (3, 7)]  # the documented defaults, then what the caller asked


def test_a_refused_pair_comes_out_before_pairs_read_after_it() -> None:
    """Refused pairs are finished when they are read: they do not wait for the end of the run."""
    got = list(RowsProbe(RowsParams()).run(_Enc(), [_pair("x", 2.0), _pair("a"), _pair("b")]))
    assert [(r.pair_id, r.error) for r in got] == [("x", "source pixels outside [0, 1]"), ("a", None), ("b", None)]


def test_a_parameter_error_inside_a_list_names_the_item() -> None:
    with pytest.raises(UserError) as info:
        RowsProbe.from_mapping({"nan_keys": ["a", 3]})
    assert str(info.value) == "bad rows parameter nan_keys.1=3: Input should be a valid string"
