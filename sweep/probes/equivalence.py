"""Probe `equivalence`: how large and how linear the equivalence set of an embedding is
(docs/science.md, "Geometry: large and piecewise linear"). Per pair, one row:

- **path linearity** (`path_points` K > 0): a `match` of the pair (parameters `match`, the
  `match` probe's own, batched across pairs by its loop); for a successful match, f at K points of
  each segment, in fp32:
  - target -> x_matched, y(t) = tgt + t (x_matched - tgt): `path_target_max` = max_t
    ||f(y(t)) - f(tgt)|| / pair distance. If the equivalence set of f(tgt) contained the segment,
    this stays at the match tolerance `path_target_end` (its value at t = 1);
  - x0 -> x_matched, x(t) = x0 + t (x_matched - x0): `path_chord_max` = max_t ||f(x(t)) - chord(t)||
    and `path_linear_max` = max_t ||f(x(t)) - (f(x0) + t J(x0)(x_matched - x0))|| (one JVP), each
    over the pair distance;
  - the curves (K values each: `path_target_curve`, `path_chord_curve`, `path_linear_curve`) and
    each segment's length in L2, L-inf and PSNR (`seg_src_*`: x0 -> x_matched, `seg_tgt_*`).
  The pair distance is ||f(x0) - f(tgt)|| (fp32).
- **equivalence walk** (`walk_steps` > 0): from x0, two walks of `walk_steps` steps side by side.
  Each step moves by `walk_step` * sqrt(d) in L2 (an RMS change of `walk_step` per value) along
  the walk's own fixed Gaussian direction (seeded per pair), then takes `corrector` matching steps
  back toward f(x0) (Polyak gradient steps on 1/2 ||f(x) - f(x0)||^2), clamped to [0, 1]. The
  `null` walk removes from its direction, at every step, the top `walk_k` right singular
  subspace of J(x0) (subspace iteration, `walk_iters` rounds, once per pair and reused); the
  `random` walk does not. A walk stops at its first step with ||f(x) - f(x0)|| >= `delta` *
  pair distance. Recorded: steps kept, the reachable radius (L2 from x0 of the last kept x), its
  L-inf, PSNR and SSIM against x0, the deviation curve, and `walk_ratio` = radius / random radius.
  The `null` walk's endpoint is the gallery image (variant "walk"; without a walk, x_matched,
  variant "match").

All in fp32 on the encoder's eager path (TF32 off on CUDA), one pair at a time after the match;
the pair's random draws are seeded by run seed and pair id.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import Field

from sweep.probes import metrics
from sweep.probes.base import PairInput, PairResult, Passes, Probe, ProbeParams
from sweep.probes.common import embed_fp32, item_generator
from sweep.probes.jacobian import no_tf32
from sweep.probes.match import MatchParams, MatchProbe


class EquivalenceParams(ProbeParams):
    match: MatchParams = Field(default_factory=MatchParams)  # the match whose result path linearity reads
    path_points: int = Field(default=17, ge=0, le=4097)  # K points per segment; 0: no path linearity (no match)
    walk_steps: int = Field(default=20, ge=0, le=100_000)  # 0: no walk
    delta: float = Field(default=0.05, gt=0)  # the walk stays while ||f(x) - f(x0)|| < delta * pair distance
    walk_step: float = Field(default=0.005, gt=0)  # RMS change per value of one predictor step
    walk_k: int = Field(default=8, ge=0, le=1024)  # top singular directions removed from the null walk
    walk_iters: int = Field(default=4, ge=1, le=1000)  # subspace iterations for them (once per pair)
    corrector: int = Field(default=3, ge=0, le=1000)  # matching steps back toward f(x0) per walk step


class EquivalenceProbe(Probe):
    name = "equivalence"
    Params = EquivalenceParams

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        p = self.params
        if p.path_points == 0:
            for pair in pairs:
                yield self._pair(encoder, pair, None, seed)
            return
        seen: dict[str, PairInput] = {}

        def remembered() -> Iterator[PairInput]:
            for pair in pairs:
                seen[pair.pair_id] = pair
                yield pair

        for matched in MatchProbe(p.match).run(encoder, remembered(), batch_size=batch_size, seed=seed):
            pair = seen.pop(matched.pair_id)
            if matched.error is not None:
                yield PairResult(pair.pair_id, rows=[], error=matched.error)
                continue
            yield self._pair(encoder, pair, matched, seed)

    def _pair(self, enc: Any, pair: PairInput, matched: PairResult | None, seed: int) -> PairResult:
        p = self.params
        src, tgt = pair.src.to(enc.device), pair.tgt.to(enc.device)
        with no_tf32():
            if matched is not None:
                e0, e_t = matched.embeddings["src"].to(enc.device), matched.embeddings["tgt"].to(enc.device)
            else:
                e0, e_t = embed_fp32(enc, torch.stack([src, tgt])).unbind(0)
            pair_dist = float((e0 - e_t).norm())
            row: dict[str, Any] = {"pair_dist": pair_dist, "delta": p.delta}
            images: dict[str, torch.Tensor] = {}
            variant = ""
            if matched is not None:
                images, variant = dict(matched.images), "match"  # the gallery: x_matched, unless a walk ran
                m = matched.rows[0]
                row.update(match_success=m["success"], match_steps=m["steps"], match_rel_dist=m["rel_dist"])
                if m["success"]:
                    row.update(path_linearity(enc, src, tgt, matched.images["adv"].to(enc.device), p.path_points))
            if p.walk_steps:
                walk = equivalence_walk(enc, src, e0, pair_dist, p, item_generator(seed, "walk", pair.pair_id))
                endpoint = walk.pop("_endpoint")
                row.update(walk)
                images, variant = {"src": pair.src.cpu(), "adv": endpoint.cpu(), "tgt": pair.tgt.cpu()}, "walk"
        return PairResult(
            pair_id=pair.pair_id, rows=[row], images=images,
            embeddings={"src": e0.cpu(), "tgt": e_t.cpu()}, row_embeddings=[None],
            extra={"image_variant": variant} if images else {},
        )

    # -- the planner's count: an upper bound (the match stops early, path only after a success,
    # a walk stops at its first step out of the set) ---------------------------------------------
    def passes_per_pair(self, dims: tuple[int, int] | None = None) -> Passes:
        p = self.params
        total = Passes()
        if p.path_points:
            total += MatchProbe(p.match).passes_per_pair()  # source and target embeddings included
            total += Passes(plain=2 * p.path_points, jvp=1)  # K points on each segment, J (x_matched - x0)
        else:
            total += Passes(plain=2)  # fp32 source and target
        if p.walk_steps:
            # subspace iteration: walk_iters rounds of k = min(walk_k, d) JVPs and VJPs
            k = min(p.walk_k, dims[1]) if dims is not None else p.walk_k
            total += Passes(backward=p.walk_iters * k, jvp=p.walk_iters * k)
            # both walks (2 rows, a row that left the set still computed): per step `corrector`
            # Polyak steps and one forward
            total += Passes(backward=2 * p.walk_steps * p.corrector, plain=2 * p.walk_steps)
        return total

    def bound_note(self) -> str:
        parts = []
        if self.params.path_points:
            parts.append("its match run as for probe match (" + MatchProbe(self.params.match).bound_note()
                         + "); path linearity only after a successful match")
        if self.params.walk_steps:
            parts.append("both walks counted to walk_steps; they stop once both have left the set (a walk "
                         "stops at its first step with ||f(x) - f(x0)|| >= delta x the pair distance)")
        return "; ".join(parts)

    def loop_precision(self, cuda: bool) -> str:
        """fp32: path linearity and the walk (the match run's steps: `timed_passes`)."""
        return "fp32"

    def timed_passes(self, passes: Passes, cuda: bool) -> list[tuple[Passes, str]]:
        """The match run's part at the match's own precision (bf16 on CUDA unless its setting
        says fp32), the rest (path linearity, the walk) in fp32."""
        if not self.params.path_points:
            return [(passes, "fp32")]
        match = MatchProbe(self.params.match)
        part = match.passes_per_pair()
        return [(part, match.loop_precision(cuda)), (passes - part, "fp32")]

    def cli_fields(self, result: PairResult) -> dict[str, Any]:
        return dict(result.rows[0])

    def cli_summary(self, fields: dict[str, Any]) -> list[str]:
        lines = []
        if fields.get("path_target_max") is not None:
            lines.append(f"path: target->matched max {fields['path_target_max']:.4g} of the pair distance "
                         f"(end {fields['path_target_end']:.4g}); x0->matched chord {fields['path_chord_max']:.4g}, "
                         f"first order {fields['path_linear_max']:.4g}")
        if fields.get("walk_radius") is not None:
            lines.append(f"walk: radius {fields['walk_radius']:.4g} (L2) in {fields['walk_kept']} steps, "
                         f"random {fields['random_walk_radius']:.4g}; ratio {fields['walk_ratio']}")
        return lines or ["equivalence: nothing measured"]


def path_linearity(enc: Any, src: torch.Tensor, tgt: torch.Tensor, adv: torch.Tensor, k: int) -> dict[str, Any]:
    """The path columns for one pair (fp32): 2K forwards and one JVP."""
    t = torch.linspace(0, 1, k, device=src.device)
    tv = t.view(-1, 1, 1, 1)
    f_src = embed_fp32(enc, src[None] + tv * (adv - src)[None])  # (K, D): x0 -> x_matched
    f_tgt = embed_fp32(enc, tgt[None] + tv * (adv - tgt)[None])  # (K, D): tgt -> x_matched
    with enc.forward_ad_friendly():
        _, jd = torch.func.jvp(enc.embed, (src[None].contiguous(),), ((adv - src)[None].contiguous(),))
    pair = float((f_src[0] - f_tgt[0]).norm())
    scale = 1.0 / pair if pair > 0 else math.nan
    tc = t.view(-1, 1)
    chord = (1 - tc) * f_src[0] + tc * f_src[-1]
    linear = f_src[0] + tc * jd[0].float()
    target_curve = (f_tgt - f_tgt[0]).norm(dim=1) * scale
    chord_curve = (f_src - chord).norm(dim=1) * scale
    linear_curve = (f_src - linear).norm(dim=1) * scale
    seg_src = metrics.pixel_change(adv[None], src[None])
    seg_tgt = metrics.pixel_change(adv[None], tgt[None])
    return {
        "path_points": k,
        "path_target_max": float(target_curve.max()), "path_target_end": float(target_curve[-1]),
        "path_chord_max": float(chord_curve.max()), "path_linear_max": float(linear_curve.max()),
        "path_target_curve": target_curve.tolist(), "path_chord_curve": chord_curve.tolist(),
        "path_linear_curve": linear_curve.tolist(),
        "seg_src_l2": float(seg_src["pix_l2"][0]), "seg_src_linf": float(seg_src["pix_linf"][0]),
        "seg_src_psnr": float(seg_src["psnr"][0]),
        "seg_tgt_l2": float(seg_tgt["pix_l2"][0]), "seg_tgt_linf": float(seg_tgt["pix_linf"][0]),
        "seg_tgt_psnr": float(seg_tgt["psnr"][0]),
    }


def _jvp_rows(enc: Any, x0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n, D) rows J(x0) v_i (fp32)."""
    with enc.forward_ad_friendly():
        _, out = torch.func.jvp(enc.embed, (x0.expand(len(v), *x0.shape).contiguous(),), (v.contiguous(),))
    return out


def _vjp_rows(enc: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) rows J(x_i)^T w_i (fp32)."""
    xs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((enc.embed(xs) * w).sum(), xs)
    return grad


def top_subspace(enc: Any, x0: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """(k, d) orthonormal basis of (approximately) J(x0)'s top-k right singular subspace, by
    subspace iteration V <- orth(J^T J V): `iters` rounds of k JVPs and k VJPs."""
    d = x0.numel()
    basis = torch.linalg.qr(torch.randn(d, k, generator=generator).to(x0.device)).Q  # (d, k)
    for _ in range(iters):
        jv = _jvp_rows(enc, x0, basis.T.reshape(k, *x0.shape))  # (k, D)
        jtjv = _vjp_rows(enc, x0.expand(k, *x0.shape), jv)  # (k, 3, H, W)
        basis = torch.linalg.qr(jtjv.flatten(1).T.double()).Q.float()
    return basis.T


def equivalence_walk(enc: Any, x0: torch.Tensor, e0: torch.Tensor, pair_dist: float, p: EquivalenceParams,
                     generator: torch.Generator) -> dict[str, Any]:
    """The two walks (row 0 null, row 1 random) from x0; their columns and the null walk's endpoint."""
    d = x0.numel()
    limit = p.delta * pair_dist
    basis = top_subspace(enc, x0, min(p.walk_k, d), p.walk_iters, generator) if p.walk_k else None
    direction = torch.randn(2, d, generator=generator).to(x0.device)  # each walk's own fixed direction
    length = p.walk_step * math.sqrt(d)
    x = x0.expand(2, *x0.shape).clone()
    kept = x.clone()
    alive = torch.ones(2, dtype=torch.bool, device=x0.device)
    n_kept = [0, 0]
    curves: list[list[float]] = [[], []]
    for _ in range(p.walk_steps):
        u = direction.clone()
        if basis is not None:
            for _ in range(2):
                u[0] = u[0] - basis.T @ (basis @ u[0])
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-30) * length
        x = torch.where(alive.view(-1, 1, 1, 1), (x + u.view_as(x)).clamp(0, 1), x)
        for _ in range(p.corrector):
            x = _polyak_step(enc, x, e0, alive)
        with torch.no_grad():
            dev = (enc.embed(x) - e0).norm(dim=1)
        for row in range(2):
            if not alive[row]:
                continue
            curves[row].append(float(dev[row]) / pair_dist if pair_dist > 0 else math.nan)
            if float(dev[row]) < limit:
                kept[row] = x[row]
                n_kept[row] += 1
            else:
                alive[row] = False
        if not bool(alive.any()):
            break
    change = metrics.pixel_change(kept, x0.expand_as(kept))
    radius = change["pix_l2"].tolist()
    return {
        "walk_kept": n_kept[0], "walk_radius": radius[0], "walk_linf": float(change["pix_linf"][0]),
        "walk_psnr": float(change["psnr"][0]), "walk_ssim": float(change["ssim"][0]),
        "walk_curve": curves[0],
        "random_walk_kept": n_kept[1], "random_walk_radius": radius[1],
        "random_walk_linf": float(change["pix_linf"][1]), "random_walk_psnr": float(change["psnr"][1]),
        "random_walk_ssim": float(change["ssim"][1]), "random_walk_curve": curves[1],
        "walk_ratio": radius[0] / radius[1] if radius[1] > 0 else None,
        "_endpoint": kept[0],
    }


def _polyak_step(enc: Any, x: torch.Tensor, e0: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """One matching step back toward f(x0) per row: x - (L / ||g||^2) g for L = 1/2 ||f(x) - f(x0)||^2
    (exact in one step along g for a linear f), clamped to [0, 1]; rows not alive unchanged."""
    xs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = 0.5 * (enc.embed(xs) - e0).pow(2).sum(dim=1)  # (2,)
        (grad,) = torch.autograd.grad(loss.sum(), xs)
    g2 = grad.flatten(1).pow(2).sum(dim=1).clamp_min(1e-30)
    step = (loss.detach() / g2).view(-1, 1, 1, 1)
    moved = (x - step * grad).clamp(0, 1)
    return torch.where(alive.view(-1, 1, 1, 1), moved, x).detach()
