"""Probe `lipschitz` (local directional estimates) at the source image x0.

For unit directions v in pixel space (shape (3, H, W), ||v|| = 1):

    L_fd(v, h) = ||f(x0 + h v) - f(x0)|| / h        for each h of the grid (L2 pixel units)
    L_jvp(v)   = ||J v||                             the exact directional derivative

Everything here is evaluated in float64, on a float64 copy of the encoder's module on the
encoder's device: in fp32, ||f(x0 + h v) - f(x0)|| at small h is lost in the round-off of ||f(x0)||,
and a direction with ||J v|| ~ 1e-7 sigma_1 cannot be told from zero.

Direction families:

- `random`: Gaussian directions.
- `top`: the top-k right singular vectors of J (sigma_1 >= ... >= sigma_k), by matrix-free
  subspace iteration on J^T J (forward- and reverse-mode products) with a Rayleigh-Ritz step; or,
  when the whole Jacobian is built anyway (family `null`), from its SVD.
- `null`: Gaussian directions with the whole row space of J projected out. J (D x d, D the
  embedding size) is built explicitly, by default (`jacobian` fp32) from ONE fp32 forward and its
  D backward rows batched (TF32 off); the float64 Gram matrix J J^T (D x D) gives the spectrum
  (all D singular values: `extra["singular_values"]`, the `spectrum` table), the numerical rank r
  (singular values above `rank_rtol` * sigma_1, default 1e-5 for an fp32 J) and the projection
  J^T U_r S_r^-2 U_r^T J onto the row space; projecting it out leaves a direction with
  ||J v|| ~ 0: the equivalence space. `jacobian` float64 is the former method (D float64
  forward + backward rows through the row queues, SVD). Each row of the pair carries `rank`;
  null rows carry `jv_residual` = ||J v|| / sigma_1: from the float64 JVP of the row (fp32 J: an
  independent check; <= 1e-6 is the guarantee, measured 5e-9 on vit_tiny) or from the explicit
  float64 J. A J whose rank leaves fewer than `n_null` null dimensions fails the pair, saying so.
- `off_top`: Gaussian directions with only the top-k singular subspace projected out.
- `grad`: the descent direction -grad of 1/2 ||f(x) - f(t)||^2 at x0 (the first step of a match).
- `match`: x_matched - x0 of a match run by this probe on the pair (parameters `match`, the
  `match` probe's own); used only when that match succeeded. Every row of the pair records
  `match_success` when the family was asked for.

Each row carries `fd_floor`, the round-off floor of its l_fd: 64 e / h, where e estimates the
error of one float64 forward as the fp32 forward's measured error ||f32(x0) - f64(x0)|| scaled
by 2^-29 (the ratio of the unit round-offs), and never below 2^-53 ||f(x0)||. The factor 64 is a
margin for the two forwards, the rounding of x0 + h v and kernels that accumulate in a different
order in float64 than in fp32 (on the linear test encoder the largest |l_fd - l_jvp| found is
about 1/7 of this floor). `nonlinearity` = |l_fd - l_jvp| / l_jvp is NULL where |l_fd - l_jvp| <= fd_floor (no
deviation above round-off) and where l_jvp <= `jvp_floor` (J v itself is round-off: the `null`
family's directions, whose ratio would be curvature over round-off, 1e10-1e13 on vit_tiny).
jvp_floor = 2^-26 sigma_1 (sqrt of float64's unit round-off times the largest singular value:
sigma_1 from the SVD or `top`, else sqrt(d) times the largest random-direction ||J v||, an
upper estimate); a direction J maps below it is numerically in the null space. Nonlinearity is a
curvature scale (it grows as O(h) for every smooth function), not a test of linearity.

The `match` family also gets one row at its own step h = ||x_matched - x0|| (`note` says so):
`fd_residual` = ||f(x_matched) - f(x0) - J (x_matched - x0)|| / ||f(x_matched) - f(x0)||, how far
the match path is from the first-order prediction (0 for a linear map).

`null` needs a null space: when rank(J) > d - n_null there is no n_null-dimensional one, and
the pair's null family gives one row with every estimate NULL and `note` saying so (rank and d)
instead of directions whose ||J v|| is that of any direction; with `null` the only family, the
pair fails with that message.

For a linear f(x) = W x every estimate equals its exact value
(sigmas of W, ||W v||) and the null directions satisfy W v = 0 to round-off.

Batching across pairs: each pair runs as a program over the shared row queues of
sweep/probes/rows.py. A row of a batch is one (pair, vector): a clean forward, a JVP of a
direction or of a subspace-iteration vector, a VJP (a Jacobian row of `null`, a J^T J V column, the
`grad` gradient), or a finite-difference input x0 + h v. Rows of one kind from many pairs share a
batch of up to `batch_size` rows; pairs join as the waiting rows run short (continuous batching),
so batches stay full although one pair's ask is small (k + oversample vectors per subspace round,
one gradient) or leaves a remainder (D Jacobian rows). The float64 products themselves are in
sweep/probes/products.py (a JVP ask's rows, all at one point, share its primal forward). Per-pair work stays per pair: random
directions (seeded by run seed, family and pair id, so they never depend on batch neighbours),
QR, SVD and Rayleigh-Ritz on small matrices, the fp32 source and target embeddings (one image at a
time, as before, so `fwd_err` and the k-NN embeddings do not depend on neighbours) and the
`match` family's own match run (batch of one). The float64 numbers agree with those of the pair
run alone up to the rounding of batched kernels (about 1e-15 relative). A batched product that
fails (out of memory, say) fails the pairs with rows in that batch, not the unit.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from sweep.probes.base import PairInput, PairResult, Passes, Probe, ProbeParams
from sweep.probes.common import embed_fp32, item_generator
from sweep.probes.jacobian import Float64Encoder, GramRowSpace, RowSpace, SvdRowSpace, fp32_jacobian
from sweep.probes.match import MatchParams, MatchProbe
from sweep.probes.products import forward64, jvp64, vjp64
from sweep.probes.rows import Ask, Program, run_rows

Family = Literal["random", "top", "grad", "null", "off_top", "match"]
_U64_OVER_U32 = 2.0**-29  # unit round-off of float64 over that of float32
_U64 = 2.0**-53
_JVP_REL_FLOOR = 2.0**-26  # jvp_floor = this * sigma_1: below it J v is round-off
_FLOOR_MARGIN = 64.0  # fd_floor = _FLOOR_MARGIN * (error of one float64 forward) / h


class LipschitzParams(ProbeParams):
    families: list[Family] = ["random", "top", "grad", "null"]
    h: list[float] = [0.01, 0.1, 1.0, 10.0]
    n_random: int = Field(default=4, ge=1, le=1024)
    top_k: int = Field(default=4, ge=1, le=256)
    n_null: int = Field(default=4, ge=1, le=1024)  # directions of `null` and of `off_top` each
    iters: int = Field(default=20, ge=1, le=10_000)  # subspace iterations for `top` (without `null`)
    oversample: int = Field(default=4, ge=0, le=256)  # extra iterated vectors: faster, surer convergence
    rank_rtol: float | None = Field(default=None, gt=0, lt=1)  # None: 1e-5 (fp32 J), max(D, d) * float64 eps (float64 J)
    # how `null` builds J: "fp32" (default) one fp32 forward, its D backward rows batched, the row
    # space and the spectrum from the float64 Gram J J^T; "float64" D float64 forward + backward
    # rows and an SVD of J (the former method: sigmas down to 1e-15 sigma_1, about 4x the cost)
    jacobian: Literal["fp32", "float64"] = "fp32"
    match: MatchParams = Field(default_factory=MatchParams)  # the match run for family `match`

    @field_validator("h", mode="before")
    @classmethod
    def _h_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (int, float, str)) else value

    @field_validator("h")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or any(h <= 0 for h in value):
            raise ValueError("h must be a non-empty list of positive step sizes")
        return value


class LipschitzProbe(Probe):
    name = "lipschitz"
    Params = LipschitzParams

    def _run(self, encoder: Any, pairs: Iterator[PairInput], *, batch_size: int, seed: int) -> Iterator[PairResult]:
        f64: Float64Encoder | None = None

        def programs() -> Iterator[tuple[str, Program]]:
            nonlocal f64
            for pair in pairs:
                try:
                    f64 = f64 or Float64Encoder(encoder)
                except (RuntimeError, ValueError) as err:  # the encoder cannot be copied: each pair fails
                    yield pair.pair_id, _failed(err)
                    continue
                yield pair.pair_id, self._program(encoder, pair, seed, batch_size)

        ops = {
            "fwd": lambda _, rows: forward64(f64, rows),
            "jvp": lambda points, rows: jvp64(f64, points, rows),
            "vjp": lambda points, rows: vjp64(f64, points, rows),
        }
        for pair_id, outcome in run_rows(ops, programs(), batch_size):
            if isinstance(outcome, Exception):  # e.g. out of memory: these pairs fail, not the unit
                err = outcome
                yield PairResult(pair_id, rows=[], error=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
            else:
                yield outcome

    # -- the planner's count: exact, but for the `match` family (an upper bound) ------------------
    def needs_dims(self) -> bool:
        return any(f in self.params.families for f in ("top", "null", "off_top"))

    def passes_per_pair(self, dims: tuple[int, int] | None = None) -> Passes:
        p = self.params
        families = set(p.families)
        # float64 f(x0) and f(t); the fp32 embeddings of source and target the results carry
        total = Passes(plain=4)
        n_top = 0
        if families & {"top", "null", "off_top"}:
            if dims is None:
                raise ValueError("lipschitz's top, null and off_top counts need the embedding size D")
            dim, d = dims
            n_top = min(p.top_k, dim, d)  # J has at most min(D, d) singular values
            if "null" in families and p.jacobian == "fp32":  # ONE fp32 forward, D fp32 backward rows J^T e_i
                total += Passes(plain=1, rows=dim)
            elif "null" in families:  # float64: D rows J^T e_i, each a forward + backward; top from J's SVD
                total += Passes(backward=dim)
            else:  # subspace iteration: iters x (J V, J^T J V), then J V once more (Rayleigh-Ritz)
                width = min(min(p.top_k, d) + p.oversample, d)
                total += Passes(backward=p.iters * width, jvp=(p.iters + 1) * width)
        if "grad" in families:  # the matching loss's gradient at x0: one backward (f(x0), f(t) are known)
            total += Passes(backward=1)
        if "match" in families:  # a whole match run on the pair (upper bound)
            total += MatchProbe(p.match).passes_per_pair() + Passes(plain=1)  # + f(x_matched) at h_match
        counts = {"random": p.n_random, "top": n_top, "grad": 1, "null": p.n_null, "off_top": p.n_null, "match": 1}
        n = sum(counts[f] for f in p.families)  # a family listed twice is measured twice
        return total + Passes(plain=n * len(p.h), jvp=n)  # the finite differences at every h, ||J v||

    def bound_note(self) -> str:
        if "match" not in self.params.families:
            return ""
        return ("family match: its match run as for probe match (" + MatchProbe(self.params.match).bound_note()
                + "); the match direction's products only when that match succeeds")

    def loop_precision(self, cuda: bool) -> str:
        """fp32: the products run in float64 and are timed at the fp32 rate (H100: the float64
        tensor-core peak is about the fp32 one; unmeasured), the `match` family's steps too (an
        over-estimate where they run bf16)."""
        return "fp32"

    # -- `vitsweep probe lipschitz` ---------------------------------------------------------------
    def cli_fields(self, result: PairResult) -> dict[str, Any]:
        return {"estimates": result.rows, "sigmas": result.extra["sigmas"]}

    def cli_summary(self, fields: dict[str, Any]) -> list[str]:
        return ["lipschitz: top singular values " + ", ".join(f"{s:.4g}" for s in fields["sigmas"])]

    def _program(self, enc: Any, pair: PairInput, seed: int, batch_size: int) -> Generator[list[Ask], list[torch.Tensor], PairResult]:
        """One pair's probe, asking the shared row queues for every float64 product it needs."""
        p = self.params
        x0 = pair.src.to(enc.device, torch.float64)  # (3, H, W)
        # fp32 embeddings one image at a time, as the reported ones are: fwd_err must not depend
        # on batch neighbours
        e0_fp32 = embed_fp32(enc, pair.src.to(enc.device)[None])[0]
        e_t_fp32 = embed_fp32(enc, pair.tgt.to(enc.device)[None])[0]
        (clean,) = yield [Ask("fwd", None, torch.stack([x0, pair.tgt.to(enc.device, torch.float64)]))]
        e0, e_t = clean[0], clean[1]  # (D,) float64 each
        # error of one float64 forward, estimated from the measured fp32 one
        fwd_err = max(float((e0_fp32.double() - e0).norm()) * _U64_OVER_U32, _U64 * float(e0.norm()))

        directions: dict[str, torch.Tensor] = {}  # family -> (n, 3, H, W) float64 unit vectors
        sigmas = torch.empty(0, dtype=torch.float64)
        per_pair: dict[str, Any] = {}
        residual: torch.Tensor | None = None
        if "null" in p.families:
            if p.jacobian == "float64":  # the former method: D float64 forward + backward rows, SVD
                eye = torch.eye(e0.numel(), dtype=x0.dtype, device=x0.device)
                (jac,) = yield [Ask("vjp", x0, eye)]  # row i = J^T e_i
                space: RowSpace = SvdRowSpace(jac.flatten(1), p.rank_rtol)
            else:  # one fp32 forward, its D backward rows batched; the float64 Gram J J^T
                space = GramRowSpace(fp32_jacobian(enc, pair.src.to(enc.device), batch_size), p.rank_rtol)
            svals, rank = space.svals, space.rank
            k = min(p.top_k, len(svals))
            v_top, sigmas = _unit(space.top(k).reshape(k, *x0.shape)), svals[:k]
            per_pair["rank"] = rank
            per_pair["_svals"] = svals
            per_pair["sigma1"] = per_pair["_sigma1"] = float(svals[0])
            d = x0.numel()
            if rank > d - p.n_null:  # no n_null-dimensional null space: no null directions
                per_pair["no_null"] = (f"no null space: rank(J) = {rank} of d = {d} (family null needs "
                                       f"rank <= d - n_null = {d - p.n_null})")
                if all(f == "null" for f in p.families):
                    return PairResult(pair_id=pair.pair_id, rows=[], error=per_pair["no_null"])
            else:  # the row space projected out (J itself is not kept)
                gauss = _gaussian(p.n_null, x0, item_generator(seed, "null", pair.pair_id))
                directions["null"] = _unit(space.project_out(gauss.flatten(1)).view_as(gauss))
                if p.jacobian == "float64":  # ||J v|| / sigma_1 from the explicit float64 J, as before
                    residual = space.apply(directions["null"].flatten(1)).norm(dim=1) / float(svals[0])  # (n,)
            del space
        elif "top" in p.families or "off_top" in p.families:
            v_top, sigmas = yield from _top_singular(x0, p.top_k, p.iters, p.oversample, item_generator(seed, "top", pair.pair_id))
        if "top" in p.families:
            directions["top"] = v_top
        if "random" in p.families:
            directions["random"] = _gaussian(p.n_random, x0, item_generator(seed, "random", pair.pair_id))
        if "grad" in p.families:  # -grad of 1/2 ||f(x) - f(t)||^2 at x0 = -J^T (f(x0) - f(t))
            (grad,) = yield [Ask("vjp", x0, (e0 - e_t)[None])]
            directions["grad"] = _unit(-grad)
        if "off_top" in p.families:
            basis = v_top.flatten(1)  # (k, d), orthonormal
            directions["off_top"] = _project_out(_gaussian(p.n_null, x0, item_generator(seed, "off_top", pair.pair_id)), basis)
        if "match" in p.families:
            found = _matched_direction(enc, pair, p.match, seed)
            per_pair["match_success"] = found is not None
            if found is not None:
                found64 = found.to(enc.device, torch.float64)
                per_pair["h_match"] = float(found64.norm())
                directions["match"] = _unit(found64[None])

        families = [f for f in p.families if f in directions]  # `match` without a successful match: none
        l_jvp = l_fd = torch.empty(0, dtype=torch.float64)
        if families:
            v = torch.cat([directions[f] for f in families])  # (N, 3, H, W)
            jv, e = yield [Ask("jvp", x0, v), Ask("fwd", None, _Steps(x0, v, p.h))]
            l_jvp = jv.norm(dim=1)  # (N,)
            steps = torch.tensor(p.h, dtype=v.dtype, device=v.device)
            l_fd = (e.view(len(v), len(p.h), -1) - e0).norm(dim=-1) / steps  # (N, len(h))
        # J v's round-off floor: a fraction of sigma_1 (from the SVD, `top`, or sqrt(d) x random)
        sigma1 = per_pair.get("sigma1") or (float(sigmas[0]) if len(sigmas) else None)
        if sigma1 is None and "random" in families:
            at = families.index("random")
            first_random = sum(len(directions[f]) for f in families[:at])
            sigma1 = float(l_jvp[first_random:first_random + len(directions["random"])].max()) * x0.numel() ** 0.5
        jvp_floor = _JVP_REL_FLOOR * sigma1 if sigma1 else 0.0
        rows: list[dict[str, Any]] = []
        first = 0
        for family in families:
            for j in range(len(directions[family])):
                for hi, h in enumerate(p.h):
                    jvp, fd = float(l_jvp[first + j]), float(l_fd[first + j, hi])
                    floor = _FLOOR_MARGIN * fwd_err / h
                    deviation = abs(fd - jvp)
                    rows.append({
                        "family": family, "direction": j, "h": float(h), "l_fd": fd, "l_jvp": jvp,
                        "sigma": float(sigmas[j]) if family == "top" else None,
                        "fd_floor": floor,
                        "jvp_floor": jvp_floor,
                        "nonlinearity": deviation / jvp if deviation > floor and jvp > jvp_floor else None,
                        "jv_residual": _jv_residual(family, j, residual, jvp, per_pair.get("_sigma1")),
                        "rank": per_pair.get("rank"),
                        "match_success": per_pair.get("match_success"),
                    })
            first += len(directions[family])
        if "match" in families and per_pair.get("h_match", 0) > 0:
            # the match path at its own step h = ||x_matched - x0||: f(x_matched) against the
            # first-order prediction f(x0) + J (x_matched - x0); fd_residual is the relative miss
            at = sum(len(directions[f]) for f in families[:families.index("match")])
            h = per_pair["h_match"]
            (em,) = yield [Ask("fwd", None, (x0 + h * directions["match"][0])[None])]
            moved = em[0] - e0
            jvp, fd = float(l_jvp[at]), float(moved.norm()) / h
            floor = _FLOOR_MARGIN * fwd_err / h
            deviation = abs(fd - jvp)
            rows.append({
                "family": "match", "direction": 0, "h": h, "l_fd": fd, "l_jvp": jvp, "sigma": None,
                "fd_floor": floor, "jvp_floor": jvp_floor,
                "nonlinearity": deviation / jvp if deviation > floor and jvp > jvp_floor else None,
                "fd_residual": float((moved - h * jv[at]).norm()) / max(float(moved.norm()), 1e-300),
                "jv_residual": None, "rank": per_pair.get("rank"),
                "match_success": per_pair.get("match_success"), "note": "h = ||x_matched - x0||",
            })
        if "no_null" in per_pair:  # one row saying why the family has no directions
            rows.append({"family": "null", "direction": None, "h": None, "l_fd": None, "l_jvp": None,
                         "sigma": None, "fd_floor": None, "jvp_floor": jvp_floor, "nonlinearity": None,
                         "jv_residual": None, "rank": per_pair.get("rank"),
                         "match_success": per_pair.get("match_success"), "note": per_pair["no_null"]})
        extra: dict[str, Any] = {
            "sigmas": sigmas.tolist(),
            "directions": {k: v.cpu() for k, v in directions.items()},
            "fwd_err": fwd_err,
        }
        if "rank" in per_pair:
            extra["rank"] = per_pair["rank"]
            extra["singular_values"] = per_pair["_svals"].cpu()
            extra["jacobian"] = p.jacobian
        if "match_success" in per_pair:
            extra["match_success"] = per_pair["match_success"]
        return PairResult(
            pair_id=pair.pair_id,
            rows=rows,
            embeddings={"src": e0_fp32.cpu(), "tgt": e_t_fp32.cpu()},  # fp32, as k-NN labels use
            row_embeddings=[None] * len(rows),
            extra=extra,
        )


def _jv_residual(family: str, j: int, residual: torch.Tensor | None, jvp: float, sigma1: float | None) -> float | None:
    """A `null` row's ||J v|| / sigma_1: from the explicit float64 J (jacobian float64), else from
    the float64 JVP of the row (jacobian fp32: an independent check of the fp32 projection)."""
    if family != "null":
        return None
    if residual is not None:
        return float(residual[j])
    return jvp / sigma1 if sigma1 else None


def _failed(err: Exception) -> Program:
    """A program that fails at once (its pair gets the error)."""
    raise err
    yield []  # pragma: no cover  (makes this a generator)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows of (n, 3, H, W) scaled to unit L2 norm."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, 1, 1, 1)


def _gaussian(n: int, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, H, W) float64 unit Gaussian directions on x0's device."""
    return _unit(torch.randn((n, *x0.shape), generator=generator).to(x0.device, torch.float64))


def _project_out(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Unit rows of v (n, 3, H, W) with the span of the orthonormal rows of basis (k, d) removed
    (twice: one Gram-Schmidt pass leaves round-off of the size of the removed part)."""
    flat = v.flatten(1)
    for _ in range(2):
        flat = flat - (flat @ basis.T) @ basis
    return _unit(flat.view_as(v))


class _Steps:
    """The finite-difference inputs x0 + h v_i, (n * len(h), 3, H, W) in (direction, h) order,
    made a slice at a time (only the rows of the current batch are in memory)."""

    def __init__(self, x0: torch.Tensor, v: torch.Tensor, hs: list[float]) -> None:
        self.x0, self.v = x0, v
        self.h = torch.tensor(hs, dtype=v.dtype, device=v.device)

    def __len__(self) -> int:
        return len(self.v) * len(self.h)

    def __getitem__(self, index: slice) -> torch.Tensor:
        rows = torch.arange(len(self))[index]
        direction, step = rows // len(self.h), rows % len(self.h)
        # no clamping to [0, 1]: that would bend v
        return self.x0[None] + self.h[step.to(self.h.device)].view(-1, 1, 1, 1) * self.v[direction.to(self.v.device)]


def _top_singular(
    x0: torch.Tensor, k: int, iters: int, oversample: int, generator: torch.Generator
) -> Generator[list[Ask], list[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Top-k right singular vectors (k, 3, H, W) and singular values (k,) of J = df/dx at x0,
    by subspace iteration V <- orth(J^T J V) on k + oversample vectors, finished with a
    Rayleigh-Ritz step (the error of sigma_k shrinks like (sigma_{k+oversample+1} / sigma_k)^(2 iters)).
    The products are asked of the row queues; QR and SVD are per pair, on (d, width) matrices."""
    d = x0.numel()
    k = min(k, d)
    width = min(k + oversample, d)
    basis = torch.linalg.qr(torch.randn(d, width, generator=generator).to(x0.device, x0.dtype)).Q  # (d, width)
    for _ in range(iters):
        (jv,) = yield [Ask("jvp", x0, basis.T.reshape(width, *x0.shape))]  # (width, D)
        (jtjv,) = yield [Ask("vjp", x0, jv)]  # (width, 3, H, W)
        basis = torch.linalg.qr(jtjv.flatten(1).T).Q
    (jv,) = yield [Ask("jvp", x0, basis.T.reshape(width, *x0.shape))]  # (width, D) = (J V)^T
    _, sigma, rot_t = torch.linalg.svd(jv.T, full_matrices=False)  # J V = U S R^T
    k = min(k, sigma.numel())  # J has rank <= D: no more than D singular values exist
    v_top = (basis @ rot_t.T).T[:k]  # (k, d): V R, ordered by sigma
    return _unit(v_top.reshape(k, *x0.shape)), sigma[:k]


def _matched_direction(enc: Any, pair: PairInput, params: MatchParams, seed: int) -> torch.Tensor | None:
    """x_matched - x0 (3, H, W) from a `match` run on this pair (deterministic: one pair, batch
    of one, the run's seed), or None when that match did not succeed or did not move."""
    (result,) = list(MatchProbe(params).run(enc, [pair], batch_size=1, seed=seed))
    if result.error is not None or not result.rows or not result.rows[0]["success"]:
        return None
    delta = result.images["adv"].double() - pair.src.double()
    return delta if float(delta.norm()) > 0 else None
