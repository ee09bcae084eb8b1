"""The probe contract (sweep/probes/base.py) and the shared metrics (sweep/probes/metrics.py),
against independent computations.

The contract is exercised with a tiny probe defined here (its rows are plain functions of its
inputs), so every check of `Probe.run` is seen on its own: pixel range and shape checks on the
way in, the NaN check on the way out, refused pairs reported as error results, nothing lost.
The metrics are compared with formulas written out here (PSNR) and with scikit-image (SSIM).
The 8-bit re-check of match is judged on the rounded image: recomputed here from the matched
pixels with a plain matrix product on the linear encoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from pydantic import Field
from skimage.metrics import structural_similarity

from sweep.errors import UserError
from sweep.probes import build_probe
from sweep.probes import metrics
from sweep.probes.base import PairInput, PairResult, Probe, ProbeParams
from sweep.data.images import quantize_8bit
from tests.support.encoders import LinearEncoder


class _Enc:
    input_size = (3, 4, 4)


class EchoParams(ProbeParams):
    scale: float = Field(default=1.0, gt=0)
    nan_column: str | None = None  # this column is NaN in every row
    flat_image: bool = False  # return a (3*H, W) image: a probe bug the contract must catch


class EchoProbe(Probe):
    """Rows: `value` = scale x mean source pixel, `psnr` = NaN when asked; results in reverse order."""

    name: ClassVar[str] = "echo"
    Params: ClassVar[type[ProbeParams]] = EchoParams

    def __init__(self, params: ProbeParams) -> None:
        super().__init__(params)
        self.seen: list[str] = []

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        items = list(pairs)
        self.seen = [p.pair_id for p in items]
        for pair in reversed(items):
            row = {"value": self.params.scale * float(pair.src.mean()), "psnr": 30.0}
            if self.params.nan_column:
                row[self.params.nan_column] = float("nan")
            image = pair.src.reshape(12, 4) if self.params.flat_image else pair.src
            yield PairResult(pair.pair_id, rows=[row, dict(row)], images={"src": image})


def _pair(pair_id: str, src: torch.Tensor | None = None, tgt: torch.Tensor | None = None) -> PairInput:
    base = torch.full((3, 4, 4), 0.5)
    return PairInput(pair_id, base if src is None else src, base if tgt is None else tgt)


def _run(probe: Probe, pairs: list[PairInput], **kwargs: Any) -> dict[str, PairResult]:
    results = list(probe.run(_Enc(), pairs, **kwargs))
    assert len(results) == len(pairs) == len({r.pair_id for r in results})  # one result per pair
    return {r.pair_id: r for r in results}


@pytest.mark.parametrize(
    ("role", "bad", "message"),
    [
        ("src", torch.full((3, 4, 4), 1.0 + 1e-6), "source pixels outside [0, 1]"),
        ("src", torch.full((3, 4, 4), -1e-6), "source pixels outside [0, 1]"),
        ("tgt", torch.full((3, 4, 4), 1.5), "target pixels outside [0, 1]"),
        ("tgt", torch.full((3, 4, 4), -0.5), "target pixels outside [0, 1]"),
        ("src", torch.full((3, 4, 4), float("nan")), "source pixels outside [0, 1]"),
        ("tgt", torch.full((3, 4, 4), float("inf")), "target pixels outside [0, 1]"),
        ("src", torch.full((3, 4, 5), 0.5), "source has shape (3, 4, 5), the encoder wants (3, 4, 4)"),
        ("tgt", torch.full((4, 4), 0.5), "target has shape (4, 4), the encoder wants (3, 4, 4)"),
    ],
)
def test_inputs_outside_the_contract_become_error_results(role: str, bad: torch.Tensor, message: str) -> None:
    probe = EchoProbe(EchoParams())
    bad_pair = _pair("bad", **{role: bad})
    got = _run(probe, [_pair("ok1"), bad_pair, _pair("ok2")])
    assert got["bad"].error == message and got["bad"].rows == []
    assert probe.seen == ["ok1", "ok2"]  # the refused pair never reached the probe
    assert got["ok1"].error is None and got["ok1"].rows[0]["value"] == pytest.approx(0.5)


def test_pixels_at_the_bounds_are_accepted() -> None:
    probe = EchoProbe(EchoParams(scale=2.0))
    edge = torch.zeros(3, 4, 4)
    edge[0] = 1.0
    got = _run(probe, [_pair("edge", src=edge, tgt=torch.ones(3, 4, 4))])
    assert got["edge"].error is None and got["edge"].rows[0]["value"] == pytest.approx(2 / 3)


def test_a_nan_metric_turns_the_pair_into_an_error() -> None:
    got = _run(EchoProbe(EchoParams(nan_column="value")), [_pair("a"), _pair("b")])
    for result in got.values():
        assert result.error == "non-finite value (the embedding diverged)" and result.rows == []


@pytest.mark.parametrize("column", ["psnr", "nonlinearity", "disp_over_pair", "random_disp_over_pair"])
def test_columns_that_may_be_undefined_stay_nan(column: str) -> None:
    got = _run(EchoProbe(EchoParams(nan_column=column)), [_pair("a")])
    assert got["a"].error is None and len(got["a"].rows) == 2
    assert all(math.isnan(row[column]) for row in got["a"].rows)


def test_a_badly_shaped_result_image_is_a_probe_bug() -> None:
    with pytest.raises(AssertionError, match=r"image src of pair a is not \(3, H, W\)"):
        list(EchoProbe(EchoParams(flat_image=True)).run(_Enc(), [_pair("a")]))


def test_batch_size_and_parameters_are_user_errors() -> None:
    with pytest.raises(UserError, match="batch size must be at least 1, got 0"):
        list(EchoProbe(EchoParams()).run(_Enc(), [_pair("a")], batch_size=0))
    assert len(list(EchoProbe(EchoParams()).run(_Enc(), [_pair("a")], batch_size=1))) == 1
    with pytest.raises(UserError, match=r"^unknown echo parameter 'colour' \(known: flat_image, nan_column, scale\)$"):
        EchoProbe.from_mapping({"colour": "red"})
    with pytest.raises(UserError, match=r"^bad echo parameter scale=-1\.0: "):
        EchoProbe.from_mapping({"scale": -1.0})
    assert EchoProbe.from_mapping({"scale": 3}).params.scale == 3.0


def test_params_json_and_config_hash() -> None:
    a, b = EchoProbe.from_mapping({"scale": 2}), EchoProbe.from_mapping({"scale": 2.0})
    assert a.params_json() == '{"flat_image": false, "nan_column": null, "scale": 2.0}'
    assert a.config_hash("m", "w") == b.config_hash("m", "w") and len(a.config_hash()) == 16
    assert a.config_hash("m", "w") != a.config_hash("m", "w2") != EchoProbe.from_mapping({}).config_hash("m", "w")
    assert int(a.config_hash(), 16) >= 0  # hex


# ---------------------------------------------------------------------------------- metrics
def test_embedding_distances_against_plain_formulas() -> None:
    e = torch.tensor([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    t = torch.tensor([[0.0, 4.0, 3.0], [2.0, 2.0, 2.0]])
    assert metrics.sq_l2(e, t).tolist() == [18.0, 3.0]
    assert metrics.rel_dist(e, t).tolist() == pytest.approx([math.sqrt(18) / 5, math.sqrt(3) / math.sqrt(12)])
    assert metrics.cosine(e, t).tolist() == pytest.approx([16 / 25, 1.0])
    assert metrics.rel_dist(t, torch.zeros_like(t)).tolist() == pytest.approx([5e12, math.sqrt(12) * 1e12])


@pytest.mark.parametrize("size", [8, 16, 24])
def test_pixel_change_against_independent_psnr_and_ssim(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    x0 = torch.rand(3, 3, size, size, generator=g)
    x = (x0 + 0.05 * torch.randn(3, 3, size, size, generator=g)).clamp(0, 1)
    x[2] = x0[2]  # an unchanged image: infinite PSNR, SSIM 1
    got = metrics.pixel_change(x, x0)
    delta = (x - x0).double().flatten(1)
    assert got["pix_l2"].tolist() == pytest.approx(delta.norm(dim=1).tolist(), rel=1e-5)
    assert got["pix_linf"].tolist() == pytest.approx(delta.abs().max(dim=1).values.tolist(), rel=1e-5)
    mse = delta.pow(2).mean(dim=1)
    for i in range(2):
        assert float(got["psnr"][i]) == pytest.approx(10 * math.log10(1.0 / float(mse[i])), rel=1e-4)
        win = 11 if size >= 11 else (size if size % 2 else size - 1)
        want = structural_similarity(x[i].permute(1, 2, 0).double().numpy(), x0[i].permute(1, 2, 0).double().numpy(),
                                     data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5 * win / 11,
                                     win_size=win, use_sample_covariance=False)
        assert float(got["ssim"][i]) == pytest.approx(want, abs=2e-3)
        assert float(got["ssim"][i]) < 0.99
    assert math.isinf(float(got["psnr"][2])) and float(got["ssim"][2]) == pytest.approx(1.0, abs=1e-6)
    assert float(got["pix_l2"][2]) == 0.0


def test_ssim_kernel_shrinks_to_odd_sizes() -> None:
    assert [metrics._ssim_kernel(s) for s in (2, 3, 4, 5, 8, 10, 11, 224)] == [3, 3, 3, 5, 7, 9, 11, 11]


# ---------------------------------------------------------------------------------- 8-bit re-check
def test_quantize_8bit_rounds_to_levels_and_clips() -> None:
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 0.49 / 255, 1.51 / 255, 0.5, 1.0, 1.3])
    assert (quantize_8bit(x) * 255).tolist() == pytest.approx([0, 0, 0, 0, 2, 128, 255, 255])


def test_match_8bit_recheck_is_judged_on_the_rounded_image() -> None:
    """quant_* are the match's numbers for the matched image rounded to 8 bits, recomputed here
    with the linear encoder's matrix. A pair stops as soon as rel_dist <= rho, so rounding pushes
    some just-matched pairs back over the threshold: their quant_success must be False."""
    from sweep.encoders import load_encoder

    rho = 0.1
    encoder = load_encoder("tests.support.encoders:linear_encoder", "factory", device="cpu")
    weight = LinearEncoder().weight.detach().double()  # (16, 192): the same seeded map
    g = torch.Generator().manual_seed(0)
    pairs = [PairInput(f"p{i}", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)) for i in range(16)]
    probe = build_probe("match", {"max_steps": 200, "log_every": 10, "rho": rho, "precision": "fp32"})
    min_cos = probe.params.min_cos
    outcomes, moved = [], []
    for result in probe.run(encoder, pairs, batch_size=8):
        assert result.error is None, result.error
        (row,) = result.rows
        adv = result.images["adv"].double()
        tgt = next(p.tgt for p in pairs if p.pair_id == result.pair_id).double()
        e_t = weight @ tgt.flatten()
        e_adv = weight @ adv.flatten()
        e_q = weight @ (torch.round(adv.clamp(0, 1) * 255) / 255).flatten()
        rel, rel_q = float((e_adv - e_t).norm() / e_t.norm()), float((e_q - e_t).norm() / e_t.norm())
        cos_q = float(e_q @ e_t / (e_q.norm() * e_t.norm()))
        assert row["rel_dist"] == pytest.approx(rel, rel=1e-4)
        assert row["quant_rel_dist"] == pytest.approx(rel_q, rel=1e-4)
        assert row["quant_cos"] == pytest.approx(cos_q, rel=1e-5)
        assert row["quant_success"] == (rel_q <= rho and cos_q >= min_cos)
        assert row["success"] == (rel <= rho and row["cos"] >= min_cos)
        outcomes.append((row["success"], row["quant_success"]))
        moved.append(abs(rel_q - rel) > 1e-4)
    assert len(outcomes) == 16 and any(moved)  # rounding moves the numbers: the two are told apart
    # and it changes a verdict: with these seeds pair p7 stops at rel_dist 0.09998, 0.10008 once rounded
    assert (True, False) in outcomes and (True, True) in outcomes, outcomes
