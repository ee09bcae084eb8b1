"""Probe `perturb` (normal space): how far can an invisible change move the embedding?

Untargeted projected gradient ascent on 1/2 ||f(x0 + delta) - f(x0)||^2 subject to
||delta||_p <= eps and x0 + delta in [0, 1], for every eps of the grid. Start: a random point of
the ball (`random_start`), or else a tiny random one (random signs of size eps/100 for L-inf, a
Gaussian direction of length eps/100 for L2): at delta = 0 the gradient of the objective is
exactly 0, so a start at x0 would never move; from the tiny start the first gradient is about
J^T J delta_0, one power-iteration step towards the steepest directions. The reported delta is
the best iterate (start included) by the fp32 displacement, not the last.

Baseline: random deltas (the median over `random_draws` draws: `random_disp`, the mean of the
two middle draws for an even count; the best draw is kept as `random_disp_max`, so `over_random`
does not grow with the number of draws) whose norm *after* the [0, 1] clamp is eps: an
L2 draw is a Gaussian direction whose scale is found by bisection so that the clamped delta has
norm eps (clamping saturated pixels would otherwise shrink it); an L-inf draw is random signs of
size eps, whose L-inf norm survives the clamp. Both norms are recorded (`delta_norm`,
`random_norm`; the latter is below eps only where even an unbounded scale cannot reach eps).
Displacements are reported absolutely, relative to ||f(x0)||, and relative to the pair's own
distance ||f(x0) - f(t)||. (The targeted variant is `match` with an eps-ball.)

Batching across pairs: an item of the shared continuous loop (sweep/probes/loop.py) is one
(pair, eps) of the grid, so the loop's slots hold items of many pairs and refill as they finish;
the random baseline embeds the draws of all items finishing together (draws x items rows)
`batch_size` at a time. Every random draw is seeded by (run seed, pair, eps index, draw), so a
pair's numbers do not depend on its batch neighbours beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from sweep.probes import metrics
from sweep.probes.base import PairInput, PairResult, Passes, Probe, ProbeParams
from sweep.probes.common import Precision, autocast, embed_fp32, floats, head_labels, item_generator, zeroshot_labels
from sweep.probes.geometry import ball_point, clamped_at_norm, norms, project, random_direction, steepest_ascent
from sweep.probes.loop import State, run_continuous

_TINY_START = 1e-2  # without random_start: the start's size, as a share of eps
_DEFAULT_EPS = {"linf": [1 / 255, 2 / 255, 4 / 255, 8 / 255], "l2": [0.25, 0.5, 1.0, 2.0]}


class PerturbParams(ProbeParams):
    norm: Literal["l2", "linf"] = "linf"
    eps: list[float] | None = None  # the grid; default per norm (8-bit steps for L-inf)
    steps: int = Field(default=20, ge=1, le=100_000)
    step_scale: float = Field(default=2.5, gt=0)  # step size = step_scale * eps / steps
    random_start: bool = True
    random_draws: int = Field(default=8, ge=1, le=1000)
    precision: Precision = "auto"

    @model_validator(mode="before")
    @classmethod
    def _eps_as_list(cls, values: Any) -> Any:
        if isinstance(values, dict) and isinstance(values.get("eps"), (int, float, str)):
            values = {**values, "eps": [values["eps"]]}
        return values

    @model_validator(mode="after")
    def _fill_eps(self) -> "PerturbParams":
        if self.eps is None:
            object.__setattr__(self, "eps", list(_DEFAULT_EPS[self.norm]))
        if not self.eps or any(e <= 0 for e in self.eps):
            raise ValueError("eps must be a non-empty list of positive radii")
        return self


@dataclass
class _Item:
    pair: PairInput
    eps: float
    index: int  # position in the eps grid


class PerturbProbe(Probe):
    name = "perturb"
    Params = PerturbParams
    sync_every = 5

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        grid = list(self.params.eps or [])
        pending: dict[str, PairResult] = {}
        items = (_Item(pair, eps, i) for pair in pairs for i, eps in enumerate(grid))
        task = _PerturbTask(encoder, self.params, seed, batch_size)
        for pair_id, i, row, emb, images, embeddings in run_continuous(task, items, batch_size, self.sync_every):
            result = pending.setdefault(pair_id, PairResult(pair_id, rows=[None] * len(grid)))  # type: ignore[list-item]
            result.rows[i] = row
            if not result.row_embeddings:
                result.row_embeddings = [None] * len(grid)
            result.row_embeddings[i] = emb
            result.embeddings = embeddings
            if i == len(grid) - 1:
                result.images = images  # the gallery shows the largest eps
                result.extra["image_variant"] = f"eps={grid[i]:.4g}"
            if all(r is not None for r in result.rows):
                task.forget(pair_id)
                yield pending.pop(pair_id)


    # -- the planner's count: exact --------------------------------------------------------------
    def passes_per_pair(self, dims: tuple[int, int] | None = None) -> Passes:
        n_eps = len(self.params.eps or [])
        # clean source and target once; per eps: the steps, the fp32 forwards of the last and the
        # best iterate (the loop never evaluated the last one), the random draws
        return Passes(plain=2 + n_eps * (2 + self.params.random_draws), backward=n_eps * self.params.steps)

    # -- `vitsweep probe perturb` ------------------------------------------------------------------
    def cli_fields(self, result: PairResult) -> dict[str, Any]:
        return {"results": result.rows}

    def cli_summary(self, fields: dict[str, Any]) -> list[str]:
        return [f"perturb {row['norm']} eps={row['eps']:.4g}: displacement {row['disp_over_pair']:.3f} of the pair "
                f"distance (random: {row['random_disp_over_pair']:.3f})" for row in fields["results"]]


class _PerturbTask:
    def __init__(self, encoder: Any, p: PerturbParams, seed: int, batch_size: int) -> None:
        self.enc = encoder
        self.p = p
        self.seed = seed
        self.batch_size = batch_size
        self.device = encoder.device
        self._clean: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # pair -> fp32 (e_src, e_tgt), (D,) each

    def clean_embeddings(self, items: list[_Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) fp32 source and target embeddings, computed once per pair for its whole eps grid."""
        new = {it.pair.pair_id: it.pair for it in items if it.pair.pair_id not in self._clean}
        if new:
            pairs = list(new.values())
            e_src = embed_fp32(self.enc, torch.stack([p.src for p in pairs]).to(self.device))
            e_tgt = embed_fp32(self.enc, torch.stack([p.tgt for p in pairs]).to(self.device))
            for i, pair in enumerate(pairs):
                self._clean[pair.pair_id] = (e_src[i], e_tgt[i])
        src, tgt = zip(*(self._clean[it.pair.pair_id] for it in items))
        return torch.stack(src), torch.stack(tgt)

    def forget(self, pair_id: str) -> None:
        self._clean.pop(pair_id, None)

    def new_state(self, items: list[_Item]) -> State:
        x0 = torch.stack([it.pair.src for it in items]).to(self.device)  # (B, 3, H, W)
        eps = torch.tensor([it.eps for it in items], device=self.device)
        start = torch.stack([self._start(it) for it in items]).to(self.device)
        delta = (x0 + start).clamp(0, 1) - x0
        b = len(items)
        return {
            "x0": x0, "delta": delta, "eps": eps, "e0": self.clean_embeddings(items)[0],
            "best": delta.clone(),  # the iterate with the largest in-loop objective so far
            "best_loss": torch.full((b,), -float("inf"), device=self.device),
            "steps": torch.zeros(b, dtype=torch.long, device=self.device),
            "done": torch.zeros(b, dtype=torch.bool, device=self.device),
        }

    def _start(self, it: _Item) -> torch.Tensor:
        """(3, H, W) start: a random point of the ball, or a tiny random one (see the module doc)."""
        g = item_generator(self.seed, "perturb-start", it.pair.pair_id, it.index)
        shape = it.pair.src.shape
        if not self.p.random_start:
            return random_direction(shape, self.p.norm, g) * (_TINY_START * it.eps)
        return ball_point(shape, self.p.norm, it.eps, g)

    def step(self, s: State) -> None:
        p = self.p
        delta = s["delta"].detach().requires_grad_(True)
        with autocast(self.device, p.precision):
            e = self.enc.loop_embed(s["x0"] + delta)
        loss = 0.5 * (e.float() - s["e0"]).pow(2).sum(dim=-1)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            better = ~s["done"] & (loss.detach() > s["best_loss"])
            s["best_loss"] = torch.where(better, loss.detach(), s["best_loss"])
            s["best"] = torch.where(better.view(-1, 1, 1, 1), s["delta"], s["best"])
            alpha = (p.step_scale * s["eps"] / p.steps).view(-1, 1, 1, 1)
            new = project(s["delta"] + alpha * steepest_ascent(grad, p.norm), p.norm, s["eps"])
            new = (s["x0"] + new).clamp(0, 1) - s["x0"]
            keep = (~s["done"]).view(-1, 1, 1, 1)
            s["delta"] = torch.where(keep, new, s["delta"])
            s["steps"] += (~s["done"]).long()
            s["done"] |= s["steps"] >= p.steps

    def max_calls(self, item: _Item) -> int:
        return self.p.steps

    @torch.no_grad()
    def finish(self, items: list[_Item], s: State) -> Iterator[tuple[Any, ...]]:
        x0, e0 = s["x0"], s["e0"]
        # the last iterate was never evaluated in the loop: the best of it and the loop's best, in fp32
        e_last, e_best = embed_fp32(self.enc, x0 + s["delta"]), embed_fp32(self.enc, x0 + s["best"])
        last_wins = ((e_last - e0).norm(dim=-1) >= (e_best - e0).norm(dim=-1)).view(-1, 1, 1, 1)
        delta = torch.where(last_wins, s["delta"], s["best"])
        e_adv = torch.where(last_wins.view(-1, 1), e_last, e_best)
        x_adv = x0 + delta
        tgt = torch.stack([it.pair.tgt for it in items]).to(self.device)
        e_t = self.clean_embeddings(items)[1]
        e0_norm = e0.norm(dim=-1).clamp_min(1e-12)
        pair_dist = (e0 - e_t).norm(dim=-1)
        disp = (e_adv - e0).norm(dim=-1)
        random_disp, random_norm, random_max = self._random_baseline(items, x0, e0)
        pix = metrics.pixel_change(x_adv, x0)
        pred_src, prob_src = head_labels(self.enc, e0)
        pred_adv, prob_adv = head_labels(self.enc, e_adv)
        zs = {role: zeroshot_labels(self.enc, e) for role, e in (("src", e0), ("tgt", e_t), ("adv", e_adv))}
        columns = {
            "emb_disp": floats(disp), "rel_disp": floats(disp / e0_norm),
            "disp_over_pair": floats(disp / pair_dist), "random_disp": floats(random_disp),
            "random_rel_disp": floats(random_disp / e0_norm), "random_disp_over_pair": floats(random_disp / pair_dist),
            "random_disp_max": floats(random_max), "random_disp_over_pair_max": floats(random_max / pair_dist),
            "cos_after": floats(metrics.cosine(e_adv, e0)),
            "delta_norm": floats(norms(delta, self.p.norm)), "random_norm": floats(random_norm),
            **{key: floats(value) for key, value in pix.items()},
            "pred_src": pred_src, "pred_adv": pred_adv, "prob_src": prob_src, "prob_adv": prob_adv,
            **{f"zs_{role}": zs[role][0] for role in zs}, **{f"zs_prob_{role}": zs[role][1] for role in zs},
        }
        rows = [dict(zip(columns, values)) for values in zip(*(list(v) for v in columns.values()))]
        for i, (it, row) in enumerate(zip(items, rows)):
            row.update(norm=self.p.norm, eps=it.eps, steps=int(s["steps"][i]))
            images = {"src": x0[i].cpu(), "adv": x_adv[i].cpu(), "tgt": tgt[i].cpu()}
            embeddings = {"src": e0[i].cpu(), "tgt": e_t[i].cpu()}
            yield it.pair.pair_id, it.index, row, e_adv[i].cpu(), images, embeddings

    def _random_baseline(self, items: list[_Item], x0: torch.Tensor, e0: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) median embedding displacement over `random_draws` random deltas whose norm after
        the [0, 1] clamp is eps (the mean of the two middle draws for an even count), (B,) the
        norm of the median draw(s) (their mean), and (B,) the best draw's displacement.

        The B x random_draws draws of the finished items (all pairs and eps alike) are embedded
        together, `batch_size` at a time, draw-major: every forward is full but the last."""
        b, draws = len(items), self.p.random_draws
        eps = torch.tensor([it.eps for it in items], device=self.device)
        disp = torch.empty(draws * b, device=self.device)  # row r: draw r // b of item r % b
        size = torch.empty(draws * b, device=self.device)
        for start in range(0, draws * b, self.batch_size):
            rows = torch.arange(start, min(start + self.batch_size, draws * b))
            item, draw = (rows % b).tolist(), (rows // b).tolist()
            raw = torch.stack([self._random_direction(items[i], k) for i, k in zip(item, draw)]).to(self.device)
            x, r_eps = x0[item], eps[item]
            deltas = clamped_at_norm(x, raw, r_eps, self.p.norm)
            deltas = (x + deltas).clamp(0, 1) - x  # the delta of the image actually embedded
            disp[start:start + len(rows)] = (embed_fp32(self.enc, x + deltas, self.batch_size) - e0[item]).norm(dim=-1)
            size[start:start + len(rows)] = norms(deltas, self.p.norm)
        disp, size = disp.view(draws, b), size.view(draws, b)
        order = torch.sort(disp, dim=0, stable=True).indices  # (draws, B) draw indices by displacement
        lo, hi = order[(draws - 1) // 2], order[draws // 2]  # (B,) the middle draw(s)
        cols = torch.arange(b, device=self.device)
        median = (disp[lo, cols] + disp[hi, cols]) / 2
        median_norm = (size[lo, cols] + size[hi, cols]) / 2
        return median, median_norm, disp.max(dim=0).values

    def _random_direction(self, it: _Item, draw: int) -> torch.Tensor:
        """(3, H, W): random signs (L-inf) or a unit Gaussian direction (L2)."""
        g = item_generator(self.seed, "perturb-random", it.pair.pair_id, it.index, draw)
        return random_direction(it.pair.src.shape, self.p.norm, g)

