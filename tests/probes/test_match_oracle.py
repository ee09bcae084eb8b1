"""`match` on the linear encoder (f(x) = W x) against a plain per-pair loop written here.

The reference loops work in float64 with the gradient in closed form (W^T (W x - f(t)), or
(2 / D) W^T (W x - f(t)) for the paper preset's mean squared error), one pair at a time, and
every reported column is recomputed from W: distances, cosines, pixel change, the 8-bit re-check,
head labels (a linear head set here) and the loss trajectory. The probe runs the pairs batched,
with slot refills, so these tests check the formulas and the batching together.

The stopping step is compared exactly; each case checks that its thresholds are not within
float32 round-off of any tested value, so float32 against float64 cannot change a verdict.
"""

from __future__ import annotations

import math

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput

N_CLASSES = 5


def _encoder(mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None):
    enc = load_encoder("tests.support.encoders:linear_encoder", "factory", device="cpu")
    head = torch.nn.Linear(16, N_CLASSES)
    with torch.no_grad():
        head.weight.copy_(torch.randn(N_CLASSES, 16, generator=torch.Generator().manual_seed(5)))
        head.bias.copy_(torch.linspace(-0.5, 0.5, N_CLASSES))
    enc.head = head
    if mean is not None:
        enc.mean, enc.std = torch.tensor(mean), torch.tensor(std)
    return enc


def _pairs(n: int, seed: int) -> list[PairInput]:
    g = torch.Generator().manual_seed(seed)
    return [PairInput(f"p{i}", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)) for i in range(n)]


class Margin:
    """The smallest distance of any tested value from its threshold (relative)."""

    def __init__(self) -> None:
        self.low = math.inf

    def see(self, value: float, threshold: float) -> None:
        self.low = min(self.low, abs(value - threshold) / max(abs(threshold), 1e-3))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def reference_default(W, src, tgt, *, optimizer, lr, rho, min_cos, max_steps, log_every, eps=None, norm="linf",
                      bias=None, margin=None, mean=None, std=None):
    """One pair, preset "default": x in [0, 1], loss 1/2 ||f(x) - f(t)||^2. With `bias`, the
    in-loop forward is W x + bias (the step's own embedding) while the stopping test is judged on
    W x as well: a step stops only where both pass (the probe's fp32 confirmation). With `mean`
    and `std` (per channel), the encoder normalises first: f(x) = W ((x - mean) / std), which is
    the linear map (W / std) x - W (mean / std), so the gradient is (W / std)^T (f(x) - f(t))."""
    if mean is not None:
        per_value = lambda v: torch.tensor(v, dtype=torch.float64).view(3, 1, 1).expand(3, 8, 8).flatten()
        offset = W @ (per_value(mean) / per_value(std))
        W = W / per_value(std)
    x0 = src.double().flatten()
    x = x0.clone()
    e_t = W @ tgt.double().flatten()
    b = torch.zeros_like(e_t) if bias is None else bias.double()
    if mean is not None:
        e_t = e_t - offset
        b = b - offset
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    traj: list[float] = []
    steps, vetoes = 0, 0

    def passes(e):
        rel, cos = float((e - e_t).norm() / e_t.norm()), _cos(e, e_t)
        if margin is not None:
            margin.see(rel, rho)
            margin.see(cos, min_cos)
        return rel <= rho and cos >= min_cos

    while True:
        g_e = W @ x + b
        diff = g_e - e_t
        if steps % log_every == 0:
            traj.append(0.5 * float(diff @ diff))
        if passes(g_e):
            if bias is None or passes(g_e - bias.double()):
                break
            vetoes += 1
        grad = W.T @ diff
        if optimizer == "gd":
            x_new = x - lr * grad
        elif optimizer == "sign":
            x_new = x - lr * grad.sign()
        else:
            t = steps + 1
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            x_new = x - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        if eps is not None:
            d = x_new - x0
            d = d.clamp(-eps, eps) if norm == "linf" else d * min(1.0, eps / float(d.norm()))
            x_new = x0 + d
        x = x_new.clamp(0, 1)
        steps += 1
        if steps >= max_steps:
            if steps % log_every == 0:  # no forward ran at the last x: the final loss fills the slot
                d = W @ x + b - (0 if bias is None else bias.double()) - e_t
                traj.append(0.5 * float(d @ d))
            break
    return x.view(3, 8, 8), steps, traj, vetoes


def _expected_row(W, C, c, src, tgt, adv, success_of, paper_mean=None, paper_std=None):
    """Every reported column of one pair, from W, the head (C, c) and the images (pixels)."""
    mean = torch.zeros(3, 1, 1, dtype=torch.float64) if paper_mean is None else torch.tensor(paper_mean).double().view(3, 1, 1)
    std = torch.ones(3, 1, 1, dtype=torch.float64) if paper_std is None else torch.tensor(paper_std).double().view(3, 1, 1)

    def f(pixels):
        return W @ ((pixels.double() - mean) / std).flatten()

    e_s, e_t, e_x = f(src), f(tgt), f(adv)
    x_q = torch.round(adv.double().clamp(0, 1) * 255) / 255
    e_q = f(x_q)
    delta = (adv.double() - src.double()).flatten()
    row = {
        "sq_l2": float((e_x - e_t) @ (e_x - e_t)), "cos": _cos(e_x, e_t), "rel_dist": float((e_x - e_t).norm() / e_t.norm()),
        "rel_dist_start": float((e_s - e_t).norm() / e_t.norm()), "cos_start": _cos(e_s, e_t),
        "pix_l2": float(delta.norm()), "pix_linf": float(delta.abs().max()),
        "psnr": 10 * math.log10(1 / float(delta.pow(2).mean())) if delta.abs().max() > 0 else math.inf,
        "quant_cos": _cos(e_q, e_t), "quant_rel_dist": float((e_q - e_t).norm() / e_t.norm()),
    }
    row["success"] = success_of(row["sq_l2"], row["cos"], row["rel_dist"])
    row["quant_success"] = success_of(float((e_q - e_t) @ (e_q - e_t)), row["quant_cos"], row["quant_rel_dist"])
    for role, e in (("src", e_s), ("tgt", e_t), ("adv", e_x)):
        p = (C @ e + c).softmax(dim=0)
        row[f"pred_{role}"], row[f"prob_{role}"] = int(p.argmax()), float(p.max())
    return row, (e_s, e_t, e_x)


def _check(result, pair, want_x, want_steps, want_traj, W, C, c, success_of, log_every, **norm):
    assert result.error is None, result.error
    (row,) = result.rows
    assert row["steps"] == want_steps, result.pair_id
    assert torch.allclose(result.images["adv"].double(), want_x, atol=2e-5), result.pair_id
    assert torch.equal(result.images["src"], pair.src) and torch.equal(result.images["tgt"], pair.tgt)
    want, (e_s, e_t, e_x) = _expected_row(W, C, c, pair.src, pair.tgt, result.images["adv"], success_of, **norm)
    for key, value in want.items():
        if isinstance(value, float):
            assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (result.pair_id, key)
        else:
            assert row[key] == value, (result.pair_id, key)
    assert 0 < row["ssim"] <= 1
    assert row["log_every"] == log_every
    assert row["loss_trajectory"] == pytest.approx(want_traj, rel=1e-4, abs=1e-7), result.pair_id
    for role, e in (("src", e_s), ("tgt", e_t)):
        assert torch.allclose(result.embeddings[role].double(), e, rtol=1e-5, atol=1e-6)
    (e_row,) = result.row_embeddings
    assert torch.allclose(e_row.double(), e_x, rtol=1e-5, atol=1e-6)
    return row


CASES = {  # each with some pairs that stop on the test and some that run out of steps
    "gd": {"optimizer": "gd", "lr": 0.25, "rho": 0.05, "min_cos": 0.99, "max_steps": 15, "log_every": 3},
    "sign": {"optimizer": "sign", "lr": 0.01, "rho": 0.2, "min_cos": 0.95, "max_steps": 15, "log_every": 5},
    "adam": {"optimizer": "adam", "lr": 0.05, "rho": 0.08, "min_cos": 0.98, "max_steps": 30, "log_every": 4},
    "gd-l2": {"optimizer": "gd", "lr": 0.2, "rho": 0.25, "min_cos": 0.95, "max_steps": 30, "log_every": 2,
              "eps": 1.2, "norm": "l2"},
    "adam-linf": {"optimizer": "adam", "lr": 0.01, "rho": 0.3, "min_cos": 0.9, "max_steps": 30, "log_every": 5,
                  "eps": 0.12, "norm": "linf"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_default_preset_equals_a_plain_per_pair_loop(case: str) -> None:
    params = CASES[case]
    enc = _encoder()
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    pairs = _pairs(7, seed=3)
    probe = build_probe("match", {**params, "precision": "fp32"})
    probe.sync_every = 3  # refill often
    results = {r.pair_id: r for r in probe.run(enc, pairs, batch_size=3)}
    assert sorted(results) == sorted(p.pair_id for p in pairs)
    rho, min_cos = params["rho"], params["min_cos"]
    margin = Margin()
    steps = []
    for pair in pairs:
        x, n, traj, _ = reference_default(
            W, pair.src, pair.tgt, optimizer=params["optimizer"], lr=params["lr"], rho=rho, min_cos=min_cos,
            max_steps=params["max_steps"], log_every=params["log_every"], eps=params.get("eps"),
            norm=params.get("norm", "linf"), margin=margin)
        row = _check(results[pair.pair_id], pair, x, n, traj, W, C, c,
                     lambda sq, cos, rel: rel <= rho and cos >= min_cos, params["log_every"])
        steps.append(n)
        if "eps" in params:
            delta = (results[pair.pair_id].images["adv"] - pair.src).flatten()
            size = float(delta.abs().max() if params["norm"] == "linf" else delta.norm())
            assert size <= params["eps"] + 1e-5 and size > 0.5 * params["eps"]
        assert row["rel_dist_start"] > 0.3
    assert margin.low > 2e-5, "a threshold sits within round-off of a tested value: pick other settings"
    assert len(set(steps)) > 2 and min(steps) > 1  # pairs stop at different steps
    assert params["max_steps"] in steps and any(n < params["max_steps"] for n in steps)


def test_a_stopping_test_the_fp32_check_overrules_sends_the_pair_on() -> None:
    """The in-loop forward is W x + b (set as the encoder's hot-loop function), the reported test
    uses W x: a step whose in-loop test passes stops only when the fp32 test passes at that x."""
    enc = _encoder()
    bias = 0.04 * torch.randn(16, generator=torch.Generator().manual_seed(11))
    enc.loop_fn = lambda module, x: module(x) + bias
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    params = {"optimizer": "gd", "lr": 0.5, "rho": 0.06, "min_cos": 0.99, "max_steps": 20, "log_every": 1}
    probe = build_probe("match", {**params, "precision": "fp32"})
    probe.sync_every = 4
    pairs = _pairs(6, seed=8)
    results = {r.pair_id: r for r in probe.run(enc, pairs, batch_size=4)}
    margin = Margin()
    vetoed, stopped = 0, 0
    for pair in pairs:
        x, n, traj, vetoes = reference_default(
            W, pair.src, pair.tgt, optimizer="gd", lr=0.5, rho=0.06, min_cos=0.99, max_steps=20, log_every=1,
            bias=bias, margin=margin)
        _check(results[pair.pair_id], pair, x, n, traj, W, C, c,
               lambda sq, cos, rel: rel <= 0.06 and cos >= 0.99, 1)
        vetoed += vetoes > 0
        stopped += vetoes > 0 and n < 20
    assert margin.low > 2e-5
    assert stopped >= 1 and vetoed >= 2, (stopped, vetoed)


def reference_paper(W, mean, std, src, tgt, *, lr, tau, min_cos, max_steps, log_every, margin):
    """The authors' algorithm, one pair: x normalised, loss = mean (W x - f(t))^2, plain gradient
    descent, clamp to the source's global [min, max]; stop when ||.||^2 < tau and cos > min_cos."""
    m, s = torch.tensor(mean).double().view(3, 1, 1), torch.tensor(std).double().view(3, 1, 1)
    x = ((src.double() - m) / s).flatten()
    lo, hi = float(x.min()), float(x.max())
    e_t = W @ ((tgt.double() - m) / s).flatten()
    dim = len(e_t)
    traj, steps = [], 0
    while True:
        diff = W @ x - e_t
        sq, cos = float(diff @ diff), _cos(W @ x, e_t)
        if steps % log_every == 0:
            traj.append(sq / dim)
        margin.see(sq, tau)
        margin.see(cos, min_cos)
        if sq < tau and cos > min_cos:
            break
        x = (x - lr * (2 / dim) * (W.T @ diff)).clamp(lo, hi)
        steps += 1
        if steps >= max_steps:
            if steps % log_every == 0:
                d = W @ x - e_t
                traj.append(float(d @ d) / dim)
            break
    return (x.view(3, 8, 8) * s + m), steps, traj


def test_paper_preset_equals_the_authors_loop_on_a_normalising_encoder() -> None:
    mean, std = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)
    enc = _encoder(mean, std)
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    params = {"preset": "paper", "lr": 4.0, "tau": 0.5, "min_cos": 0.97, "max_steps": 5, "log_every": 1}
    probe = build_probe("match", params)
    assert probe.params.precision == "fp32" and probe.params.optimizer == "gd"
    probe.sync_every = 3
    pairs = _pairs(6, seed=4)
    results = {r.pair_id: r for r in probe.run(enc, pairs, batch_size=4)}
    margin = Margin()
    steps = []
    for pair in pairs:
        x, n, traj = reference_paper(W, mean, std, pair.src, pair.tgt, lr=4.0, tau=0.5, min_cos=0.97,
                                     max_steps=5, log_every=1, margin=margin)
        _check(results[pair.pair_id], pair, x, n, traj, W, C, c, lambda sq, cos, rel: sq < 0.5 and cos > 0.97, 1,
               paper_mean=mean, paper_std=std)
        x_norm = (results[pair.pair_id].images["adv"].double() - torch.tensor(mean).double().view(3, 1, 1)) / torch.tensor(std).double().view(3, 1, 1)
        x0 = (pair.src.double() - torch.tensor(mean).double().view(3, 1, 1)) / torch.tensor(std).double().view(3, 1, 1)
        assert x0.min() - 1e-5 <= x_norm.min() and x_norm.max() <= x0.max() + 1e-5  # the source's global range
        steps.append(n)
    assert margin.low > 2e-5
    assert len(set(steps)) > 1 and any(n < 5 for n in steps) and 5 in steps, steps


def test_a_pair_that_starts_matched_stops_at_step_zero() -> None:
    enc = _encoder()
    (pair,) = _pairs(1, seed=0)
    same = PairInput("same", pair.src, pair.src.clone())
    (result,) = list(build_probe("match", {"max_steps": 5, "log_every": 2}).run(enc, [same]))
    row = result.rows[0]
    assert row["steps"] == 0 and row["success"] is True and row["sq_l2"] == 0.0 and row["cos"] == pytest.approx(1.0)
    assert row["pix_l2"] == 0.0 and math.isinf(row["psnr"]) and row["loss_trajectory"] == [0.0]


def test_project_onto_l2_and_linf_balls_per_row() -> None:
    """`project` (also perturb's) in closed form, with a radius per row as perturb passes it."""
    from sweep.probes.geometry import project

    scale = torch.tensor([0.01, 0.1, 1.0], dtype=torch.float64).view(3, 1, 1, 1)
    delta = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale
    eps = torch.tensor([0.5, 0.3, 0.05], dtype=torch.float64)
    lengths = delta.flatten(1).norm(dim=1)
    assert lengths[0] < eps[0] and eps[1] < lengths[1] < 1 < lengths[2]  # inside; outside, shorter than 1; longer
    got = project(delta, "l2", eps)
    for i in range(3):
        want = delta[i] if lengths[i] <= eps[i] else delta[i] * (eps[i] / lengths[i])
        assert torch.allclose(got[i], want, rtol=1e-12, atol=0)
        assert torch.equal(project(delta, "linf", eps)[i], delta[i].clamp(-float(eps[i]), float(eps[i])))
    # a scalar radius keeps the perturbation's dtype: exactly 0.1 in float64, not float32's 0.1
    assert float(project(delta, "linf", 0.1).abs().max()) == 0.1
    assert float(project(delta[2:], "l2", 0.1).flatten().norm()) == pytest.approx(0.1, rel=1e-15)
    assert project(delta, "linf", 0.1).dtype == torch.float64
    assert torch.equal(project(torch.zeros(1, 3, 2, 2), "l2", 0.1), torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("sync_every", [None, 3])
def test_a_pair_waits_at_most_one_sync_round_after_it_matched(sync_every) -> None:
    """A pair whose test passes at x_s (s updates) is confirmed at the next sync: the loop runs
    sync_every * ceil((s + 1) / sync_every) batched forwards (the probe's default sync_every is 10)."""
    enc = _encoder()
    calls = []
    enc.loop_fn = lambda module, x: (calls.append(len(x)), module(x))[1]
    W = enc.module.weight.detach().double()
    params = {**CASES["gd"], "max_steps": 40}
    (pair,) = _pairs(1, seed=3)
    _, s, _, _ = reference_default(W, pair.src, pair.tgt, optimizer="gd", lr=params["lr"], rho=params["rho"],
                                   min_cos=params["min_cos"], max_steps=40, log_every=3)
    assert 10 <= s < 30
    probe = build_probe("match", params)
    if sync_every is not None:
        probe.sync_every = sync_every
    every = sync_every or 10
    (result,) = list(probe.run(enc, [pair]))
    assert result.rows[0]["steps"] == s
    assert len(calls) == every * math.ceil((s + 1) / every) and set(calls) == {1}


# -- cases the tests above leave open (mutation-testing survivors of match.py) -------------------

@pytest.mark.parametrize("optimizer,lr,max_steps", [("gd", 0.02, 9), ("adam", 0.02, 30)])
def test_default_preset_on_a_normalising_encoder_moves_pixels(optimizer: str, lr: float, max_steps: int) -> None:
    """The default preset works in pixel space through the encoder's own normalisation: the
    reference's map is W ((x - mean) / std), its gradient carries the 1 / std factor, and the
    fp32 test and the reported numbers embed the pixels, not x taken as normalised input."""
    mean, std = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)
    enc = _encoder(mean, std)
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    params = {"optimizer": optimizer, "lr": lr, "rho": 0.1, "min_cos": 0.99, "max_steps": max_steps, "log_every": 4}
    probe = build_probe("match", {**params, "precision": "fp32"})
    probe.sync_every = 3
    pairs = _pairs(6, seed=12)
    results = {r.pair_id: r for r in probe.run(enc, pairs, batch_size=4)}
    margin = Margin()
    steps = []
    for pair in pairs:
        x, n, traj, _ = reference_default(W, pair.src, pair.tgt, optimizer=optimizer, lr=lr, rho=0.1, min_cos=0.99,
                                          max_steps=max_steps, log_every=4, margin=margin, mean=mean, std=std)
        _check(results[pair.pair_id], pair, x, n, traj, W, C, c, lambda sq, cos, rel: rel <= 0.1 and cos >= 0.99, 4,
               paper_mean=mean, paper_std=std)
        steps.append(n)
    assert margin.low > 2e-5
    assert max_steps in steps and any(1 < n < max_steps for n in steps), steps


def _pixel_blind_encoder(scale_tiny: float = 1e-8):
    """The linear encoder with pixels 0-19 unseen (zero weight columns: zero gradient) and pixels
    20-39 barely seen (columns times 1e-8: gradients near Adam's 1e-8)."""
    enc = _encoder()
    with torch.no_grad():
        enc.module.weight[:, :20] = 0.0
        enc.module.weight[:, 20:40] *= scale_tiny
    return enc


@pytest.mark.parametrize("optimizer,lr,max_steps", [("sign", 0.01, 15), ("adam", 0.02, 10)])
def test_pixels_with_zero_or_tiny_gradient(optimizer: str, lr: float, max_steps: int) -> None:
    """sign(0) = 0 leaves an unseen pixel where it is; Adam divides by sqrt(v_hat) + 1e-8, so a
    pixel whose gradient is about 1e-9 moves by about lr / 10 a step, in the gradient's direction."""
    enc = _pixel_blind_encoder()
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    params = {"optimizer": optimizer, "lr": lr, "rho": 0.2, "min_cos": 0.95, "max_steps": max_steps, "log_every": 5}
    probe = build_probe("match", {**params, "precision": "fp32"})
    pairs = _pairs(4, seed=21)
    results = {r.pair_id: r for r in probe.run(enc, pairs, batch_size=4)}
    margin = Margin()
    steps = []
    for pair in pairs:
        x, n, traj, _ = reference_default(W, pair.src, pair.tgt, optimizer=optimizer, lr=lr, rho=0.2, min_cos=0.95,
                                          max_steps=max_steps, log_every=5, margin=margin)
        _check(results[pair.pair_id], pair, x, n, traj, W, C, c, lambda sq, cos, rel: rel <= 0.2 and cos >= 0.95, 5)
        moved = (results[pair.pair_id].images["adv"] - pair.src).flatten().abs()
        assert n >= 3 and float(moved[:20].max()) == 0.0  # the unseen pixels stay put
        if optimizer == "adam":
            assert float(moved[20:40].max()) > 0.005  # the barely seen ones move: 1e-8 is not 0
        steps.append(n)
    assert margin.low > 2e-5 and max_steps in steps, steps


def _selecting_encoder():
    """The linear encoder reading pixels 0-15 as they are (W = [I 0]): exact embeddings."""
    enc = _encoder()
    with torch.no_grad():
        enc.module.weight.zero_()
        enc.module.weight[:, :16] = torch.eye(16)
    return enc


def _pair_on_the_thresholds() -> PairInput:
    """f(src) = (1/2, 1/2, 1/2, 1/2, 0, ...), f(tgt) = (1, 0, ...): exactly ||f(s) - f(t)||^2 = 1,
    rel_dist = 1 and cos = 1/2, all representable, so the probe's float32 numbers are exact."""
    src, tgt = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    src.view(-1)[:4] = 0.5
    tgt.view(-1)[0] = 1.0
    return PairInput("edge", src, tgt)


@pytest.mark.parametrize("params,stops", [
    ({"rho": 1.0, "min_cos": 0.5}, True),  # default preset: rel_dist <= rho and cos >= min_cos
    ({"rho": 0.99, "min_cos": 0.5}, False),
    ({"rho": 1.0, "min_cos": 0.51}, False),
    ({"preset": "paper", "tau": 1.0, "min_cos": 0.4}, False),  # paper: sq_l2 < tau and cos > min_cos
    ({"preset": "paper", "tau": 1.01, "min_cos": 0.4}, True),
    ({"preset": "paper", "tau": 2.0, "min_cos": 0.5}, False),
    ({"preset": "paper", "tau": 2.0, "min_cos": 0.49}, True),
])
def test_the_stopping_tests_at_their_thresholds(params: dict, stops: bool) -> None:
    """A pair whose start sits exactly on a threshold: the default preset's test includes
    equality (<=, >=), the paper's excludes it (<, >)."""
    (result,) = list(build_probe("match", {**params, "max_steps": 3, "lr": 0.01, "precision": "fp32"})
                     .run(_selecting_encoder(), [_pair_on_the_thresholds()]))
    row = result.rows[0]
    assert row["rel_dist_start"] == 1.0 and row["cos_start"] == 0.5  # the construction is exact
    if stops:
        assert row["steps"] == 0 and row["success"] is True and row["sq_l2"] == 1.0
    else:
        assert row["steps"] >= 1


def test_a_pair_that_matches_after_one_update_stops_at_step_one() -> None:
    """rho between the reference's rel_dist at x_0 and at x_1: the pair stops with steps = 1."""
    enc = _encoder()
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    (pair,) = _pairs(1, seed=5)
    lr = 0.25
    e_t = W @ pair.tgt.double().flatten()
    x0 = pair.src.double().flatten()
    x1 = (x0 - lr * W.T @ (W @ x0 - e_t)).clamp(0, 1)
    rel0, rel1 = (float((W @ x - e_t).norm() / e_t.norm()) for x in (x0, x1))
    assert rel1 < 0.9 * rel0
    rho = (rel0 * rel1) ** 0.5
    params = {"optimizer": "gd", "lr": lr, "rho": rho, "min_cos": -1.0, "max_steps": 10, "log_every": 1}
    margin = Margin()
    x, n, traj, _ = reference_default(W, pair.src, pair.tgt, **{k: v for k, v in params.items() if k != "rho"},
                                      rho=rho, margin=margin)
    assert n == 1 and margin.low > 2e-5
    (result,) = list(build_probe("match", {**params, "precision": "fp32"}).run(enc, [pair]))
    _check(result, pair, x, n, traj, W, C, c, lambda sq, cos, rel: rel <= rho, 1)


def test_the_in_loop_test_divides_by_each_targets_own_norm() -> None:
    """Targets with embeddings shorter than 1, four pairs in one batch: an in-loop rel_dist off
    from the reported one would flag rows the fp32 check then sends on, costing forwards. With
    W / 4 and lr x 16 the pixels move exactly as with W and lr (rel_dist and cos are scale-free)."""
    enc = _encoder()
    with torch.no_grad():
        enc.module.weight /= 4
    calls = []
    enc.loop_fn = lambda module, x: (calls.append(len(x)), module(x))[1]
    W = enc.module.weight.detach().double()
    C, c = enc.head.weight.detach().double(), enc.head.bias.detach().double()
    params = {"optimizer": "gd", "lr": 4.0, "rho": 0.05, "min_cos": 0.99, "max_steps": 60, "log_every": 3}
    pairs = _pairs(4, seed=3)
    assert all(float((W @ p.tgt.double().flatten()).norm()) < 1 for p in pairs)
    probe = build_probe("match", {**params, "precision": "fp32"})
    probe.sync_every = 3
    results = {r.pair_id: r for r in probe.run(enc, pairs, batch_size=4)}
    margin = Margin()
    steps = []
    for pair in pairs:
        x, n, traj, _ = reference_default(W, pair.src, pair.tgt, optimizer="gd", lr=4.0, rho=0.05, min_cos=0.99,
                                          max_steps=60, log_every=3, margin=margin)
        _check(results[pair.pair_id], pair, x, n, traj, W, C, c, lambda sq, cos, rel: rel <= 0.05 and cos >= 0.99, 3)
        steps.append(n)
    assert margin.low > 2e-5 and max(steps) < 60 and len(set(steps)) > 1, steps
    # every pair stops on its test, passing at x_n, and leaves at the sync after that forward
    # (call n + 1): pair i is in the batch for calls 1 .. 3 ceil((n_i + 1) / 3), nothing more
    last = [3 * math.ceil((n + 1) / 3) for n in steps]
    assert calls == [sum(k <= end for end in last) for k in range(1, max(last) + 1)], (calls, steps)


def test_bf16_asked_on_the_cpu_runs_the_loop_in_bf16() -> None:
    """precision=bf16 reaches the loop's forward: the first logged loss is the one of a bf16
    matmul (plain torch autocast here), not the float32 one."""
    enc = _encoder()
    W32 = enc.module.weight.detach()
    (pair,) = _pairs(1, seed=9)
    probe = build_probe("match", {"optimizer": "gd", "lr": 0.1, "max_steps": 2, "log_every": 1, "precision": "bf16"})
    (result,) = list(probe.run(enc, [pair]))
    x, t = pair.src.view(1, -1), pair.tgt.view(1, -1)
    e_t = (t.double() @ W32.double().T).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e_bf16 = (x @ W32.T).float()
    exact = 0.5 * float(((x.double() @ W32.double().T) - e_t.double()).pow(2).sum())
    in_bf16 = 0.5 * float((e_bf16 - e_t).pow(2).sum())
    assert abs(in_bf16 - exact) > 1e-4 * exact  # the two are told apart (float32 is within 1e-6)
    assert result.rows[0]["loss_trajectory"][0] == pytest.approx(in_bf16, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sign", "adam"])
def test_the_paper_preset_refuses_any_optimizer_but_plain_gradient_descent(optimizer: str) -> None:
    from sweep.errors import UserError

    with pytest.raises(UserError, match="plain gradient descent"):
        build_probe("match", {"preset": "paper", "optimizer": optimizer})
    assert build_probe("match", {"preset": "paper", "optimizer": "gd"}).params.optimizer == "gd"
