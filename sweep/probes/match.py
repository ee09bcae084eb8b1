"""Probe `match` (equivalence): move a source image until its embedding equals a target's.

Two variants (docs/science.md, "Probe `match` (claim 1)"):

- preset "paper", the authors' algorithm: x in the model's normalised input space, loss = mean
  over embedding dims of (f(x) - f(t))^2, plain gradient descent, clamp to the source's global
  [min, max]; stop when ||f(x) - f(t)||^2 < tau and cos > min_cos.
- preset "default": x in pixel space [0, 1], loss = 1/2 ||f(x) - f(t)||^2, optimiser gd | sign |
  adam, clamp to [0, 1], optional projection onto an L2 / L-inf eps-ball around the source;
  stop when rel_dist <= rho and cos >= min_cos.

The stopping test reuses the step's own forward: step s evaluates x_s, then (if it did not
pass) updates to x_{s+1}. A row whose in-loop test passes (under bf16 autocast on CUDA, a bf16
test) is frozen at x_s and confirmed at the next sync by the reported test itself: the fp32
forward of x_s in pixel space that `finish` also uses. Confirmed, it stops with `steps = s`;
overruled, it goes on from x_s (the in-loop test is ignored at that one x). So a pair stops only
when its reported test passes, or once it has taken max_steps updates; its reported numbers
(success included) are recomputed in fp32 at the final x.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from sweep.probes import metrics
from sweep.probes.base import PairInput, PairResult, Passes, Probe, ProbeParams
from sweep.probes.common import Precision, autocast, embed_fp32, floats, head_labels
from sweep.probes.geometry import project
from sweep.probes.loop import State, run_continuous
from sweep.data.images import quantize_8bit

_PAPER_DEFAULTS = {"lr": 0.08, "tau": 1e-4, "min_cos": 0.97, "max_steps": 12000, "optimizer": "gd"}
_DEFAULT_DEFAULTS = {"lr": 0.01, "min_cos": 0.99, "max_steps": 1000, "optimizer": "adam"}


class MatchParams(ProbeParams):
    preset: Literal["paper", "default"] = "default"
    lr: float | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    tau: float | None = Field(default=None, gt=0)  # squared-L2 threshold ("paper")
    min_cos: float | None = Field(default=None, ge=-1, le=1)
    rho: float = Field(default=0.05, gt=0)  # rel_dist threshold ("default")
    optimizer: Literal["gd", "sign", "adam"] | None = None
    norm: Literal["l2", "linf"] = "linf"
    eps: float | None = Field(default=None, gt=0)  # eps-ball radius around the source; none = no ball
    log_every: int = Field(default=10, ge=1)
    precision: Precision = "auto"

    @model_validator(mode="after")
    def _fill_preset(self) -> "MatchParams":
        defaults = _PAPER_DEFAULTS if self.preset == "paper" else _DEFAULT_DEFAULTS
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.preset == "paper" and self.precision == "auto":
            # The authors' loop is fp32, and their tau (1e-4 on ||f(x) - f(t)||^2) is far below
            # bf16's own forward error: in bf16 no pair could stop on it.
            object.__setattr__(self, "precision", "fp32")
        if self.preset == "paper":
            if self.optimizer != "gd":
                raise ValueError("the paper preset uses plain gradient descent (optimizer=gd)")
            if self.eps is not None:
                raise ValueError("the paper preset has no eps-ball (use preset=default)")
        return self


class MatchProbe(Probe):
    name = "match"
    Params = MatchParams
    sync_every = 10

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        task = _MatchTask(encoder, self.params)
        yield from run_continuous(task, pairs, batch_size, sync_every=self.sync_every)

    # -- the planner's counts: an upper bound (a pair runs to max_steps at the latest) ---------
    def passes_per_pair(self, dims: tuple[int, int] | None = None) -> Passes:
        # the target at admission; max_steps steps (the loop syncs when a pair's step budget is
        # spent, so without an overruled stop no pair steps more); the fp32 forward confirming a
        # stop the in-loop test flagged; the fp32 re-checks of source, result and 8-bit result
        return Passes(plain=1 + 1 + 3, backward=self.params.max_steps)

    def bound_note(self) -> str:
        return MATCH_BOUND

    def expected_passes(self, upper: Passes, mean_steps: float, confirmed: float) -> Passes:
        # the upper bound's one confirmation forward, as often as earlier pairs needed it
        return Passes(plain=upper.plain - 1 + confirmed, backward=min(mean_steps, upper.backward))

    # -- `vitsweep probe match` --------------------------------------------------------------
    def cli_fields(self, result: PairResult) -> dict[str, Any]:
        return dict(result.rows[0])

    def cli_summary(self, fields: dict[str, Any]) -> list[str]:
        return [
            f"match: success={fields['success']} after {fields['steps']} steps; cos={fields['cos']:.4f}, "
            f"rel_dist {fields['rel_dist_start']:.3f} -> {fields['rel_dist']:.4f}; "
            f"PSNR {fields['psnr']:.1f} dB, SSIM {fields['ssim']:.4f}"
        ]


# What makes the count an upper bound rather than exact (the loop syncs every `sync_every` steps).
MATCH_BOUND = ("a pair stops at max_steps at the latest and the fp32 check confirms at most one "
               "in-loop stop; each stop that check overrules (bf16 loop) would add up to 10 steps "
               "and 1 forward, not counted")


class _MatchTask:
    """The batched matching loop's per-step work; rows are pairs."""

    def __init__(self, encoder: Any, p: MatchParams) -> None:
        self.enc = encoder
        self.p = p
        self.paper = p.preset == "paper"
        self.device = encoder.device
        self.traj_len = p.max_steps // p.log_every + 2  # last column is a scratch slot

    # -- state ------------------------------------------------------------------------------
    def new_state(self, items: list[PairInput]) -> State:
        src = torch.stack([it.src for it in items]).to(self.device)  # (B, 3, H, W) pixels
        tgt = torch.stack([it.tgt for it in items]).to(self.device)
        e_tgt = embed_fp32(self.enc, tgt)  # (B, D): targets are fixed, so embed them once, in fp32
        b = len(items)
        if self.paper:
            x0 = self.enc.normalize(src)
            lo = x0.flatten(1).amin(dim=1)  # one global scalar range per source, as the authors do
            hi = x0.flatten(1).amax(dim=1)
        else:
            x0 = src
            lo = torch.zeros(b, device=self.device)
            hi = torch.ones(b, device=self.device)
        traj = torch.full((b, self.traj_len), float("nan"), device=self.device)
        state = {
            "x": x0.clone(), "x0": x0, "e_tgt": e_tgt, "lo": lo, "hi": hi, "traj": traj,
            "steps": torch.zeros(b, dtype=torch.long, device=self.device),
            "done": torch.zeros(b, dtype=torch.bool, device=self.device),
            # passed the in-loop test, frozen until `check` confirms it in fp32
            "pending": torch.zeros(b, dtype=torch.bool, device=self.device),
            # the step count at which `check` overruled the in-loop test (-1: never)
            "veto": torch.full((b,), -1, dtype=torch.long, device=self.device),
        }
        if self.p.optimizer == "adam" and not self.paper:
            state["m"] = torch.zeros_like(x0)
            state["v"] = torch.zeros_like(x0)
        return state

    # -- one step: one forward, one backward to the input ------------------------------------
    def step(self, s: State) -> None:
        p = self.p
        x = s["x"].detach().requires_grad_(True)
        with autocast(self.device, p.precision):
            e = self.enc.loop_embed_normalized(x) if self.paper else self.enc.loop_embed(x)  # (B, D)
        diff = e.float() - s["e_tgt"]
        sq = diff.pow(2).sum(dim=-1)  # (B,)
        per_pair_loss = sq / diff.shape[-1] if self.paper else 0.5 * sq
        (grad,) = torch.autograd.grad(per_pair_loss.sum(), x)  # row i gets d loss_i / d x_i only

        with torch.no_grad():
            cos = metrics.cosine(e, s["e_tgt"])
            rel = sq.sqrt() / s["e_tgt"].norm(dim=-1).clamp_min(1e-12)
            hit = self.criterion(sq, cos, rel) & (s["steps"] != s["veto"])
            active = ~s["done"] & ~s["pending"]
            self._log_loss(s, per_pair_loss.detach(), active)
            s["pending"] |= active & hit
            update = ~s["done"] & ~s["pending"]
            x_new = self._update(s, x.detach(), grad, update)
            keep = update.view(-1, 1, 1, 1)
            s["x"] = torch.where(keep, x_new, s["x"])
            s["steps"] += update.long()
            # x_max needs no forward here: the fp32 re-check in `finish` judges it
            s["done"] |= s["steps"] >= p.max_steps

    def max_calls(self, item: PairInput) -> int:
        return self.p.max_steps

    @torch.no_grad()
    def check(self, s: State) -> None:
        """At a sync: confirm the frozen rows with the reported fp32 test (done), or send them on."""
        rows = s["pending"].nonzero().flatten()  # the loop synchronises here anyway
        if len(rows) == 0:
            return
        passed = self.fp32_test(s["x"].index_select(0, rows), s["e_tgt"].index_select(0, rows))
        s["done"][rows[passed]] = True
        vetoed = rows[~passed]
        s["veto"][vetoed] = s["steps"][vetoed]
        s["pending"][rows] = False

    def fp32_test(self, x: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        """(B,) the reported stopping test: fp32 embedding of x (as pixels) against the target."""
        e = embed_fp32(self.enc, self.enc.denormalize(x) if self.paper else x)
        return self.criterion(metrics.sq_l2(e, e_t), metrics.cosine(e, e_t), metrics.rel_dist(e, e_t))

    def _log_loss(self, s: State, loss: torch.Tensor, active: torch.Tensor) -> None:
        on_stride = active & (s["steps"] % self.p.log_every == 0)
        column = torch.where(on_stride, s["steps"] // self.p.log_every, self.traj_len - 1)
        s["traj"].scatter_(1, column.view(-1, 1), loss.view(-1, 1))

    def _update(self, s: State, x: torch.Tensor, grad: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        p = self.p
        if p.optimizer == "gd":
            x_new = x - p.lr * grad
        elif p.optimizer == "sign":
            x_new = x - p.lr * grad.sign()
        else:  # adam, per pair and per value; its step count is the pair's own
            beta1, beta2, tiny = 0.9, 0.999, 1e-8
            keep = update.view(-1, 1, 1, 1)
            s["m"] = torch.where(keep, beta1 * s["m"] + (1 - beta1) * grad, s["m"])
            s["v"] = torch.where(keep, beta2 * s["v"] + (1 - beta2) * grad * grad, s["v"])
            t = (s["steps"] + 1).double().view(-1, 1, 1, 1)
            m_hat = s["m"] / (1 - beta1**t).float()
            v_hat = s["v"] / (1 - beta2**t).float()
            x_new = x - p.lr * m_hat / (v_hat.sqrt() + tiny)
        if p.eps is not None:
            x_new = s["x0"] + project(x_new - s["x0"], p.norm, p.eps)
        lo, hi = s["lo"].view(-1, 1, 1, 1), s["hi"].view(-1, 1, 1, 1)
        return torch.maximum(torch.minimum(x_new, hi), lo)

    # -- results -------------------------------------------------------------------------------
    @torch.no_grad()
    def finish(self, items: list[PairInput], s: State) -> Iterator[PairResult]:
        p = self.p
        to_pixels = self.enc.denormalize if self.paper else (lambda z: z)
        x_pix = to_pixels(s["x"])  # (B, 3, H, W); may leave [0, 1] slightly under the paper preset
        src = torch.stack([it.src for it in items]).to(self.device)
        tgt = torch.stack([it.tgt for it in items]).to(self.device)
        e_t = s["e_tgt"]
        e_src = embed_fp32(self.enc, src)
        e_adv = embed_fp32(self.enc, x_pix)
        e_q = embed_fp32(self.enc, quantize_8bit(x_pix))
        sq, cos, rel = metrics.sq_l2(e_adv, e_t), metrics.cosine(e_adv, e_t), metrics.rel_dist(e_adv, e_t)
        q_sq, q_cos, q_rel = metrics.sq_l2(e_q, e_t), metrics.cosine(e_q, e_t), metrics.rel_dist(e_q, e_t)
        success = self.criterion(sq, cos, rel)
        q_success = self.criterion(q_sq, q_cos, q_rel)
        pix = metrics.pixel_change(x_pix, src)
        pred_src, prob_src = head_labels(self.enc, e_src)
        pred_tgt, prob_tgt = head_labels(self.enc, e_t)
        pred_adv, prob_adv = head_labels(self.enc, e_adv)
        columns = {
            "success": success.tolist(), "steps": s["steps"].tolist(),
            "sq_l2": floats(sq), "cos": floats(cos), "rel_dist": floats(rel),
            "rel_dist_start": floats(metrics.rel_dist(e_src, e_t)), "cos_start": floats(metrics.cosine(e_src, e_t)),
            **{key: floats(value) for key, value in pix.items()},
            "quant_success": q_success.tolist(), "quant_cos": floats(q_cos), "quant_rel_dist": floats(q_rel),
            "pred_src": pred_src, "pred_tgt": pred_tgt, "pred_adv": pred_adv,
            "prob_src": prob_src, "prob_tgt": prob_tgt, "prob_adv": prob_adv,
        }
        rows = [dict(zip(columns, values)) for values in zip(*(list(v) for v in columns.values()))]
        traj = s["traj"][:, :-1].cpu()
        final_loss = (sq / e_t.shape[-1] if self.paper else 0.5 * sq).cpu()
        for i, (item, row) in enumerate(zip(items, rows)):
            n_logged = int(s["steps"][i]) // p.log_every + 1
            logged = traj[i, :n_logged].tolist()
            if math.isnan(logged[-1]):  # stopped on max_steps at a logging step: no forward ran there
                logged[-1] = float(final_loss[i])
            row["log_every"] = p.log_every
            row["loss_trajectory"] = logged
            yield PairResult(
                pair_id=item.pair_id,
                rows=[row],
                images={"src": src[i].cpu(), "adv": x_pix[i].cpu(), "tgt": tgt[i].cpu()},
                embeddings={"src": e_src[i].cpu(), "tgt": e_t[i].cpu()},
                row_embeddings=[e_adv[i].cpu()],
            )

    def criterion(self, sq: torch.Tensor, cos: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        p = self.p
        if self.paper:
            return (sq < p.tau) & (cos > p.min_cos)
        return (rel <= p.rho) & (cos >= p.min_cos)

