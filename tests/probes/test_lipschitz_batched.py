"""`lipschitz` batched across pairs: every row of every pair equals a plain float64 reference
written here (explicit Jacobian by torch.autograd, directions regenerated from the documented
seeding, plain subspace iteration), on a small random-init ViT and on the linear encoder, and a
pair's rows do not depend on which other pairs share its batches."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput
from sweep.probes.common import item_generator

H = [0.01, 1.0]
SEED = 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/probes/conftest.py


@pytest.fixture(scope="module")
def micro():
    return load_encoder("tests.support.tiny_models:micro_vit", device="cpu")


def _pairs(n: int, size: int, tag: str = "m") -> list[PairInput]:
    g = torch.Generator().manual_seed(21)
    return [PairInput(f"{tag}{i}", torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)) for i in range(n)]


class Reference:
    """One pair, plain float64 torch: f, its Jacobian, and the probe's documented directions."""

    def __init__(self, encoder, pair: PairInput) -> None:
        self.module = copy.deepcopy(encoder.module).double().eval()
        self.x0 = pair.src.double()
        self.pair = pair
        self.e0 = self.f(self.x0)
        self.e_t = self.f(pair.tgt.double())
        jac = torch.autograd.functional.jacobian(self.f, self.x0)  # (D, 3, H, W)
        self.jac = jac.reshape(jac.shape[0], -1)  # (D, d)
        _, self.svals, self.vh = torch.linalg.svd(self.jac, full_matrices=False)
        rtol = max(self.jac.shape) * torch.finfo(torch.float64).eps
        self.rank = int((self.svals > rtol * self.svals[0]).sum())
        with torch.no_grad():
            e32 = encoder.module(pair.src[None])[0].double()
        self.fwd_err = max(float((e32 - self.e0).norm()) * 2.0**-29, 2.0**-53 * float(self.e0.norm()))

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x[None])[0]

    def gaussian(self, family: str, n: int) -> torch.Tensor:
        g = item_generator(SEED, family, self.pair.pair_id)
        v = torch.randn((n, self.x0.numel()), generator=g).double()
        return v / v.norm(dim=1, keepdim=True)

    @staticmethod
    def without(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        q = torch.linalg.qr(basis.T).Q  # (d, r) orthonormal
        v = v - (v @ q) @ q.T
        return v / v.norm(dim=1, keepdim=True)

    def l_fd(self, v: torch.Tensor, h: float) -> float:
        with torch.no_grad():
            return float((self.f(self.x0 + h * v.view_as(self.x0)) - self.e0).norm()) / h


def _same_line(a: torch.Tensor, b: torch.Tensor) -> bool:
    return abs(abs(float(a @ b)) - 1.0) < 1e-9


def _check_rows(ref: Reference, result, families: list[str], n: int, k: int) -> None:
    dirs = {f: result.extra["directions"][f].flatten(1) for f in families}
    for family in families:
        assert dirs[family].shape[0] == {"top": k, "grad": 1}.get(family, n)
    if "random" in families:
        assert torch.allclose(dirs["random"], ref.gaussian("random", n), atol=1e-12)
    if "grad" in families:
        g = -(ref.jac.T @ (ref.e0 - ref.e_t))
        assert torch.allclose(dirs["grad"][0], g / g.norm(), atol=1e-10)
    if "null" in families:
        assert torch.allclose(dirs["null"], ref.without(ref.gaussian("null", n), ref.vh[:ref.rank]), atol=1e-9)
        assert result.extra["sigmas"] == pytest.approx(ref.svals[:k].tolist(), rel=1e-9)
        assert all(_same_line(a, b) for a, b in zip(dirs["top"], ref.vh[:k]))
    if "off_top" in families:
        assert torch.allclose(dirs["off_top"], ref.without(ref.gaussian("off_top", n), dirs["top"]), atol=1e-9)
        assert float((dirs["off_top"] @ dirs["top"].T).abs().max()) < 1e-12
    sigma1 = float(ref.svals[0])
    assert len(result.rows) == sum(len(d) for d in dirs.values()) * len(H)
    assert result.row_embeddings == [None] * len(result.rows)  # no probed image per row
    assert result.extra["fwd_err"] == pytest.approx(ref.fwd_err, rel=1e-6, abs=0)
    for row in result.rows:
        v = dirs[row["family"]][row["direction"]]
        jv = float((ref.jac @ v).norm())
        assert row["fd_floor"] == pytest.approx(64 * ref.fwd_err / row["h"], rel=1e-6, abs=0)  # values ~1e-12
        if row["family"] == "null":  # ||J v|| is round-off: small against sigma_1, and recorded as such
            assert row["l_jvp"] < 1e-12 * sigma1  # l_fd is second order: h ||f''|| / 2
            assert row["l_fd"] == pytest.approx(ref.l_fd(v, row["h"]), rel=1e-6, abs=row["fd_floor"])
            assert row["jv_residual"] == pytest.approx(jv / sigma1, abs=1e-14)
            assert row["rank"] == ref.rank
            continue
        assert row["l_jvp"] == pytest.approx(jv, rel=1e-9), row
        assert row["l_fd"] == pytest.approx(ref.l_fd(v, row["h"]), rel=1e-9), row
        assert row["sigma"] == (pytest.approx(float(ref.svals[row["direction"]]), rel=1e-6) if row["family"] == "top" else None)
        deviation = abs(row["l_fd"] - row["l_jvp"])
        if deviation > row["fd_floor"]:
            assert row["nonlinearity"] == pytest.approx(deviation / row["l_jvp"], rel=1e-6)
        else:
            assert row["nonlinearity"] is None
        assert row["jv_residual"] is None and row["rank"] == (ref.rank if "null" in families else None)


def test_rows_across_pairs_equal_a_plain_float64_reference(micro):
    """Three pairs share batches of 7 rows (Jacobian rows, JVPs and finite differences of
    different pairs in one batch); each pair's rows equal the plain reference."""
    families = ["random", "top", "grad", "null", "off_top"]
    probe = build_probe("lipschitz", {"families": families, "h": H, "top_k": 2, "n_random": 2, "n_null": 2, "jacobian": "float64"})
    pairs = _pairs(3, 16)
    results = {r.pair_id: r for r in probe.run(micro, pairs, batch_size=7, seed=SEED)}
    assert sorted(results) == ["m0", "m1", "m2"]
    nonlinear = 0
    for pair in pairs:
        result = results[pair.pair_id]
        assert result.error is None
        ref = Reference(micro, pair)
        _check_rows(ref, result, families, 2, 2)
        assert result.extra["rank"] == ref.rank and torch.allclose(result.extra["singular_values"], ref.svals, rtol=1e-9, atol=1e-12 * float(ref.svals[0]))
        with torch.no_grad():
            assert torch.allclose(result.embeddings["src"], micro.module(pair.src[None])[0])
            assert torch.allclose(result.embeddings["tgt"], micro.module(pair.tgt[None])[0])
        nonlinear += sum(r["nonlinearity"] is not None for r in result.rows)
    assert nonlinear > 0  # h = 1 is far outside the linear regime: some rows carry a nonlinearity


def _plain_subspace_iteration(ref: Reference, k: int, width: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = item_generator(SEED, "top", ref.pair.pair_id)
    basis = torch.linalg.qr(torch.randn(ref.x0.numel(), width, generator=g).double()).Q
    for _ in range(iters):
        basis = torch.linalg.qr(ref.jac.T @ (ref.jac @ basis)).Q
    _, sigma, rot_t = torch.linalg.svd(ref.jac @ basis, full_matrices=False)
    return sigma[:k], (basis @ rot_t.T).T[:k]


def test_subspace_iteration_across_pairs_equals_a_plain_one(micro):
    """Without `null`, `top` comes from subspace iteration with rows of several pairs per batch:
    sigmas and vectors equal a plain iteration on the explicit Jacobian (same seeded start)."""
    families = ["random", "top", "grad", "off_top"]
    probe = build_probe("lipschitz", {"families": families, "h": H, "top_k": 2, "oversample": 2, "iters": 6, "n_random": 1, "n_null": 1})
    pairs = _pairs(3, 16, "s")
    results = {r.pair_id: r for r in probe.run(micro, pairs, batch_size=5, seed=SEED)}
    for pair in pairs:
        ref = Reference(micro, pair)
        sigma, vecs = _plain_subspace_iteration(ref, 2, 4, 6)
        result = results[pair.pair_id]
        assert result.extra["sigmas"] == pytest.approx(sigma.tolist(), rel=1e-9)
        top = result.extra["directions"]["top"].flatten(1)
        assert all(_same_line(a, b / b.norm()) for a, b in zip(top, vecs))
        for row in result.rows:
            if row["family"] == "top":
                assert row["sigma"] == pytest.approx(float(sigma[row["direction"]]), rel=1e-9)
            v = result.extra["directions"][row["family"]][row["direction"]].flatten()
            assert row["l_jvp"] == pytest.approx(float((ref.jac @ v).norm()), rel=1e-9)
            assert row["l_fd"] == pytest.approx(ref.l_fd(v, row["h"]), rel=1e-9)
        assert sigma[0] > 0.99 * ref.svals[0]  # 6 rounds: close to the true sigma_1 already


def _float_columns(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["family"], r["direction"], r["h"]): r for r in rows}


@pytest.mark.parametrize("families", [["random", "top", "grad", "null"], ["top", "off_top", "grad"]])
def test_rows_do_not_depend_on_batch_neighbours(micro, families):
    """The same pair run alone, with two neighbours, and later in a different batch mix gives the
    same rows (float64: equal to 1e-9; the seeded directions exactly)."""
    probe = build_probe("lipschitz", {"families": families, "h": H, "top_k": 2, "iters": 4, "n_random": 2, "n_null": 2})
    pairs = _pairs(4, 16, "n")
    runs = [
        {r.pair_id: r for r in probe.run(micro, pairs[:3], batch_size=7, seed=SEED)},
        {r.pair_id: r for r in probe.run(micro, [pairs[3], pairs[1], pairs[0]], batch_size=5, seed=SEED)},
        {r.pair_id: r for r in probe.run(micro, [pairs[1]], batch_size=7, seed=SEED)},
    ]
    base = _float_columns(runs[0]["n1"].rows)
    for other in (runs[1]["n1"], runs[2]["n1"]):
        top = zip(other.extra["directions"]["top"].flatten(1), runs[0]["n1"].extra["directions"]["top"].flatten(1))
        assert all(_same_line(a, b) for a, b in top)
        if "random" in families:
            assert torch.equal(other.extra["directions"]["random"], runs[0]["n1"].extra["directions"]["random"])
        rows = _float_columns(other.rows)
        assert rows.keys() == base.keys()
        for key, row in rows.items():
            want = base[key]
            for column in ("l_fd", "l_jvp", "sigma", "fd_floor"):
                if want[column] is None:
                    assert row[column] is None
                elif key[0] != "null":
                    assert row[column] == pytest.approx(want[column], rel=1e-9), (key, column)
            assert (row["nonlinearity"] is None) == (want["nonlinearity"] is None)
            assert row["rank"] == want["rank"]
    assert runs[0]["n0"].rows != runs[0]["n1"].rows  # different pairs, different numbers


def test_linear_encoder_pairs_in_shared_batches_give_the_closed_forms():
    """f(x) = W x: every pair's sigmas are W's, every l_fd and l_jvp is ||W v||, null rows are
    W v = 0, with 16 Jacobian rows per pair split over batches of 5 mixing pairs."""
    encoder = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    weight = encoder.module.weight.detach().double()
    probe = build_probe("lipschitz", {"families": ["random", "top", "grad", "null", "off_top"], "h": H, "top_k": 3, "n_random": 2, "n_null": 2})
    pairs = _pairs(4, 8, "w")
    results = list(probe.run(encoder, pairs, batch_size=5, seed=SEED))
    assert sorted(r.pair_id for r in results) == ["w0", "w1", "w2", "w3"]
    exact = torch.linalg.svdvals(weight)
    for result in results:
        pair = next(p for p in pairs if p.pair_id == result.pair_id)
        assert result.extra["sigmas"] == pytest.approx(exact[:3].tolist(), rel=1e-9)
        grad = weight.T @ (weight @ (pair.src.flatten().double() - pair.tgt.flatten().double()))
        assert torch.allclose(result.extra["directions"]["grad"].flatten(), -grad / grad.norm(), atol=1e-10)
        for row in result.rows:
            v = result.extra["directions"][row["family"]][row["direction"]].flatten()
            want = float((weight @ v).norm())
            if row["family"] == "null":
                assert want < 1e-12 * float(exact[0]) and row["l_jvp"] < 1e-12 * float(exact[0]) and row["rank"] == 16
            else:
                assert row["l_jvp"] == pytest.approx(want, rel=1e-9) and row["l_fd"] == pytest.approx(want, rel=1e-9)
                assert row["nonlinearity"] is None


def test_a_pair_that_fails_does_not_fail_its_neighbours(micro):
    """A non-finite source pixel cannot reach the probe (the contract refuses it); an embedding
    that diverges for one pair gives that pair an error row and leaves the others intact."""
    probe = build_probe("lipschitz", {"families": ["random"], "h": [1.0], "n_random": 1})
    pairs = _pairs(3, 16, "f")
    pairs[1] = PairInput("f1", pairs[1].src, pairs[1].tgt[:, :8])  # wrong shape: refused
    results = {r.pair_id: r for r in probe.run(micro, pairs, batch_size=4, seed=SEED)}
    assert results["f1"].error is not None and not results["f1"].rows
    assert results["f0"].error is None and results["f2"].error is None
    assert math.isfinite(results["f0"].rows[0]["l_fd"])


def test_match_family_needs_a_match_that_moved():
    """Family `match` uses x_matched - x0 only from a successful match that moved: a pair whose
    source already matches (target = source) gets no `match` rows; a match that moved a little
    (||delta|| < 1) gives the direction delta / ||delta|| with l_jvp = ||W delta|| / ||delta||."""
    from sweep.probes.match import MatchParams, MatchProbe

    encoder = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    weight = encoder.module.weight.detach().double()
    g = torch.Generator().manual_seed(8)
    src = torch.rand(3, 8, 8, generator=g) * 0.8 + 0.1
    near = PairInput("near", src, (src + 0.1 * torch.randn(3, 8, 8, generator=g)).clamp(0, 1))
    same = PairInput("same", src, src.clone())
    probe = build_probe("lipschitz", {"families": ["match"], "h": [1.0]})
    results = {r.pair_id: r for r in probe.run(encoder, [same, near], batch_size=4, seed=SEED)}
    assert results["same"].error is None and results["same"].rows == []
    assert results["same"].extra["match_success"] is False
    (matched,) = list(MatchProbe(MatchParams()).run(encoder, [near], batch_size=1, seed=SEED))
    assert matched.rows[0]["success"] is True
    delta = (matched.images["adv"] - near.src).flatten().double()
    assert 0 < float(delta.norm()) < 1
    # one row at the grid's h = 1, and one at the match path's own step h = ||delta|| (issue 22)
    row, own = results["near"].rows
    assert row["family"] == "match" and row["match_success"] is True
    assert row["l_jvp"] == pytest.approx(float((weight @ delta).norm() / delta.norm()), rel=1e-6)
    assert own["family"] == "match" and own["h"] == pytest.approx(float(delta.norm()), rel=1e-6)
    assert own["l_jvp"] == row["l_jvp"] and own["fd_residual"] < 1e-9  # linear: first order is exact


def test_a_failing_float64_product_fails_its_pairs_with_one_clean_line():
    """Every float64 product fails: each pair gets an error result (type and message on one line,
    at most 300 characters of it) and no rows; none is lost, the unit does not fail."""
    from tests.support.encoders import FLOAT64_MESSAGE

    encoder = load_encoder("tests.support.encoders:float64_failing_encoder", device="cpu")
    probe = build_probe("lipschitz", {"families": ["random"], "h": [1.0], "n_random": 1})
    results = list(probe.run(encoder, _pairs(3, 8, "e"), batch_size=4, seed=SEED))
    assert sorted(r.pair_id for r in results) == ["e0", "e1", "e2"]
    want = "RuntimeError: " + " ".join(FLOAT64_MESSAGE.split())[:300]
    assert len(want) == len("RuntimeError: ") + 300 and "\n" not in want
    assert all(r.error == want and r.rows == [] for r in results), [r.error for r in results]


def test_an_encoder_that_cannot_be_copied_fails_every_pair():
    encoder = load_encoder("tests.support.encoders:uncopyable_encoder", device="cpu")
    probe = build_probe("lipschitz", {"families": ["random"], "h": [1.0], "n_random": 1})
    results = list(probe.run(encoder, _pairs(3, 8, "c"), batch_size=4, seed=SEED))
    assert sorted(r.pair_id for r in results) == ["c0", "c1", "c2"]
    assert all(r.error == "RuntimeError: this module cannot be copied (test)" and r.rows == [] for r in results)


def test_off_top_alone_uses_the_subspace_iteration_and_random_alone_none(micro):
    """`off_top` without `top` still finds the top-k subspace (by the same seeded iteration) and
    removes it; a run with neither computes no singular values."""
    probe = build_probe("lipschitz", {"families": ["off_top"], "h": [1.0], "top_k": 2, "oversample": 2, "iters": 4, "n_null": 2})
    pair = _pairs(1, 16, "o")[0]
    (result,) = list(probe.run(micro, [pair], batch_size=5, seed=SEED))
    ref = Reference(micro, pair)
    sigma, vecs = _plain_subspace_iteration(ref, 2, 4, 4)
    assert result.extra["sigmas"] == pytest.approx(sigma.tolist(), rel=1e-9)
    want = ref.without(ref.gaussian("off_top", 2), vecs)
    assert torch.allclose(result.extra["directions"]["off_top"].flatten(1), want, atol=1e-9)
    assert {r["family"] for r in result.rows} == {"off_top"}
    (plain,) = list(build_probe("lipschitz", {"families": ["random"], "h": [1.0], "n_random": 1}).run(micro, [pair], batch_size=5, seed=SEED))
    assert plain.extra["sigmas"] == [] and set(plain.extra["directions"]) == {"random"}


def test_rank_rtol_sets_the_numerical_rank(micro):
    """With rank_rtol 0.3 only singular values above 0.3 sigma_1 count: the `null` directions then
    keep the rest of the row space, and jv_residual = ||J v|| / sigma_1 is far from round-off."""
    rtol = 0.3
    probe = build_probe("lipschitz", {"families": ["null"], "h": [1.0], "n_null": 2, "rank_rtol": rtol, "jacobian": "float64"})
    pair = _pairs(1, 16, "r")[0]
    (result,) = list(probe.run(micro, [pair], batch_size=7, seed=SEED))
    ref = Reference(micro, pair)
    s = ref.svals
    rank = int((s > rtol * s[0]).sum())
    assert rank != int((s > rtol / s[0]).sum()) and rank != int((s > rtol * s[1]).sum())  # the setting discriminates
    assert result.extra["rank"] == rank and all(r["rank"] == rank for r in result.rows)
    null = result.extra["directions"]["null"].flatten(1)
    assert torch.allclose(null, ref.without(ref.gaussian("null", 2), ref.vh[:rank]), atol=1e-9)
    for row in result.rows:
        jv = float((ref.jac @ null[row["direction"]]).norm())
        assert jv > 1e-3 * float(s[0])
        assert row["jv_residual"] == pytest.approx(jv / float(s[0]), rel=1e-9)
        assert row["l_jvp"] == pytest.approx(jv, rel=1e-9)


def test_fd_floor_when_fp32_is_exact():
    """An encoder whose fp32 and float64 forwards agree exactly: the forward error estimate falls
    back to 2^-53 ||f(x0)||, so fd_floor = 64 * 2^-53 * ||f(x0)|| / h."""
    encoder = load_encoder("tests.support.encoders:select_encoder", device="cpu")
    pair = _pairs(1, 8, "x")[0]
    (result,) = list(build_probe("lipschitz", {"families": ["random"], "h": [0.5, 2.0], "n_random": 1}).run(encoder, [pair], batch_size=4, seed=SEED))
    norm = float(pair.src.flatten()[:16].double().norm())
    assert abs(norm - 1) > 0.1  # the floor scales with ||f(x0)|| (abs=0 below: the values are ~1e-16)
    assert result.extra["fwd_err"] == pytest.approx(2.0**-53 * norm, rel=1e-12, abs=0)
    for row in result.rows:
        assert row["fd_floor"] == pytest.approx(64 * 2.0**-53 * norm / row["h"], rel=1e-12, abs=0)


def test_the_float64_copy_is_the_encoders_function_with_its_normalisation(micro):
    """The float64 copy applies the encoder's own mean and std (timm models have non-trivial
    ones; the test factories normalise inside): same embedding as the fp32 encoder to 1e-5."""
    import dataclasses

    from sweep.probes.lipschitz import Float64Encoder

    encoder = dataclasses.replace(micro, mean=torch.tensor([0.4, 0.5, 0.6]), std=torch.tensor([0.2, 0.25, 0.3]))
    x = torch.stack([p.src for p in _pairs(2, 16, "z")])
    with torch.no_grad():
        want = encoder.module((x - encoder.mean.view(1, 3, 1, 1)) / encoder.std.view(1, 3, 1, 1)).double()
    got = Float64Encoder(encoder).embed(x.double())
    assert got.dtype == torch.float64 and torch.allclose(got, want, rtol=1e-5, atol=1e-6)
