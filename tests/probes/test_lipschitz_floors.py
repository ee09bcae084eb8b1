"""Lipschitz rows a model cannot be judged on (issue 22, points 5-6): `nonlinearity` is NULL where
‖J v‖ is round-off (`jvp_floor`; the `null` family, whose ratio was curvature over round-off,
3.6e10-4.3e13 on a tiny ViT), and `null` gives no directions where J has no null space."""

from __future__ import annotations

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput


def _pair(size: int, name: str = "p") -> PairInput:
    g = torch.Generator().manual_seed(0)
    return PairInput(name, torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g))


@pytest.mark.parametrize("model, size", [("tests.support.tiny_models:tiny_vit", 32),
                                         ("tests.support.encoders:linear_encoder", 8)])
def test_no_nonlinearity_above_1e3_and_none_on_null_rows(model: str, size: int) -> None:
    encoder = load_encoder(model, device="cpu")
    probe = build_probe("lipschitz", {"families": ["random", "top", "null"], "top_k": 2,
                                      "n_random": 3, "n_null": 3, "h": [0.001, 0.1, 1.0, 10.0]})
    (result,) = list(probe.run(encoder, [_pair(size)], batch_size=16))
    assert result.error is None and result.rows
    sigma1 = result.extra["sigmas"][0]
    for row in result.rows:
        assert row["jvp_floor"] == pytest.approx(2.0**-26 * sigma1, rel=1e-9)
        assert row["nonlinearity"] is None or row["nonlinearity"] <= 1e3, row
        if row["family"] == "null":
            assert row["l_jvp"] <= row["jvp_floor"] and row["nonlinearity"] is None, row
        else:
            assert row["l_jvp"] > row["jvp_floor"]


def test_no_null_rows_without_a_null_space() -> None:
    """A 300 x 192 linear map has rank 192 = d: the null family gives one row with a note
    naming rank and d and no estimate (before: four rows with jv_residual 0.50-0.54)."""
    encoder = load_encoder("tests.support.encoders:wide_linear_encoder", device="cpu")
    probe = build_probe("lipschitz", {"families": ["random", "top", "null"], "top_k": 2,
                                      "n_random": 2, "n_null": 4, "h": [1.0]})
    (result,) = list(probe.run(encoder, [_pair(8)], batch_size=16))
    assert result.error is None
    nulls = [r for r in result.rows if r["family"] == "null"]
    assert len(nulls) == 1 and nulls[0]["l_jvp"] is None and nulls[0]["l_fd"] is None
    assert "no null space" in nulls[0]["note"] and "rank(J) = 192" in nulls[0]["note"]
    assert "d = 192" in nulls[0]["note"]
    assert {r["family"] for r in result.rows} == {"random", "top", "null"}
    # null alone: the pair fails with that message
    alone = build_probe("lipschitz", {"families": ["null"], "n_null": 4, "h": [1.0]})
    (failed,) = list(alone.run(encoder, [_pair(8)], batch_size=16))
    assert failed.rows == [] and "no null space" in failed.error


@pytest.mark.parametrize("model, size, linear", [("tests.support.encoders:linear_encoder", 8, True),
                                                 ("tests.support.tiny_models:tiny_vit", 32, False)])
def test_match_path_at_its_own_step(model: str, size: int, linear: bool) -> None:
    """One `match` row at h = ||x_matched - x0|| with fd_residual, the relative miss of the
    first-order prediction: round-off for a linear map, well above it for a ViT."""
    encoder = load_encoder(model, device="cpu")
    probe = build_probe("lipschitz", {"families": ["random", "match"], "h": [1.0], "n_random": 2,
                                      "match": {"max_steps": 300}})
    (result,) = list(probe.run(encoder, [_pair(size)], batch_size=8))
    assert result.extra["match_success"] is True
    (row,) = [r for r in result.rows if r.get("fd_residual") is not None]
    assert row["family"] == "match" and row["note"] == "h = ||x_matched - x0||"
    assert row["h"] == pytest.approx(float(result.extra["directions"]["match"].norm()) * row["h"])
    assert (row["fd_residual"] < 1e-9) if linear else (row["fd_residual"] > 1e-3), row
