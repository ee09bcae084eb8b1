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
    enc = load_encoder("tests.encoders_for_tests:linear_encoder", "factory", device="cpu")
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
                      bias=None, margin=None):
    """One pair, preset "default": x in [0, 1], loss 1/2 ||f(x) - f(t)||^2. With `bias`, the
    in-loop forward is W x + bias (the step's own embedding) while the stopping test is judged on
    W x as well: a step stops only where both pass (the probe's fp32 confirmation)."""
    x0 = src.double().flatten()
    x = x0.clone()
    e_t = W @ tgt.double().flatten()
    b = torch.zeros_like(e_t) if bias is None else bias.double()
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
            if bias is None or passes(W @ x):
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
                traj.append(0.5 * float((W @ x - e_t) @ (W @ x - e_t)))
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
    from sweep.probes.match import project

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
