"""The packaged rate table `vitsweep plan` turns pass counts into time with (no torch here).

A rate is image-passes per second on one device at a large batch: `step` = one forward and one
backward to the input (a matching step), `forward` = a forward alone, `jvp` = a forward-mode
directional derivative. Every entry says where its figure comes from. Only the bf16 `step`
figures of ViT-B/16 (BENCHMARKS.md) and ViT-H/14 (the project's earlier notes, not re-measured
in BENCHMARKS.md) on an NVIDIA H100 were measured; everything else is derived and says so:

- forward = 2 x step: a backward to the input costs about what the forward does (FLOP count:
  72 GFLOP per ViT-B/16 step = twice its 36 GFLOP forward).
- jvp = step: forward-mode AD carries a tangent through the same layers, about one extra pass.
- row = forward: a backward row of the fp32 Jacobian (`lipschitz` `null`, `jacobian: fp32`:
  torch.vmap over one torch.func.vjp) is the backward half of a step alone, its forward shared
  and counted once; a backward to the input costs about a forward (FLOP count, as above).
- fp32 = bf16 x 67/794: the H100's fp32 (non-tensor-core) peak of 67 TFLOP/s against the
  794 TFLOP/s bf16 matmul ceiling measured on the same card, at the same utilisation (TF32 is off
  in this project, so fp32 does not use tensor cores). A guess until measured: use --calibrate.
- other ViTs: the ViT-B/16 rates scaled by FLOP per image (`vit_gflop`, from the name's width,
  depth, patch size and resolution); the formula gives 70 GFLOP per B/16 step against the 72
  measured, and 668 against 685 for H/14.

Issue 26's passes, as time ratios measured in one process (BENCHMARKS.md, "Geometry (issue
26)"; vit_tiny, 2-core CPU, fp32 loop) and kept in `MEASURED_RATIOS`, against what these rates
predict from the pass counts (the tests compare them): the fp32 Jacobian of `null` (one forward,
192 backward rows) against the float64 one (192 forward + backward rows), measured 0.26x,
predicted 0.50x (the table times float64 at the fp32 rate; on that CPU float64 runs at about
half of it); path linearity (K = 17) 0.062x and the equivalence walk (20 steps) 0.55x of a
300-step match, predicted 0.06x and at most 0.67x (the walk's bound; it stopped early); the
whole `null` family per pair (4 directions) 0.254x, predicted 0.54x. Work that is no encoder pass
(J J^T and its eigendecomposition, the projections) is not counted; it is a small share there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE = "NVIDIA H100 80GB"
FP32_OVER_BF16 = 67.0 / 794.0


@dataclass(frozen=True)
class Rates:
    """Image-passes per second on one device; `source` says where they come from."""

    step_bf16: float
    step_fp32: float
    forward: float  # fp32: the reported re-checks and finite differences run in fp32
    jvp: float  # fp32
    source: str
    step_compiled: float | None = None  # bf16 step under torch.compile, where measured
    cuda: bool = True  # the loop would run bf16 there (the probes' "auto" precision)
    dims: tuple[int, int] | None = None  # (embedding size D, input values d) where measured with the rates
    backward_row: float | None = None  # fp32 vmap'd vjp rows (`Passes.rows`) per second, where measured

    def step(self, precision: str, compiled: bool = False) -> float:
        if precision == "bf16":
            return (self.step_compiled if compiled and self.step_compiled else self.step_bf16)
        return self.step_fp32

    def row(self) -> float:
        """fp32 backward rows sharing one forward per second: measured, else the forward rate."""
        return self.backward_row or self.forward


# Measured on an H100 (bf16 plain batched step; torch.compile'd step): BENCHMARKS.md
_MEASURED = {
    "vit_base_patch16_224": (3293.0, 4297.0, "bf16 step measured on an H100 at batch 256 (3,293 image-steps/s; "
                             "4,297 compiled; BENCHMARKS.md)"),
    "vit_huge_patch14_clip_224": (467.0, 580.0, "bf16 step on an H100 (467 image-steps/s; 580 compiled) from the "
                                  "project's earlier notes, not re-measured in BENCHMARKS.md"),
}
_SIZES = {  # width, depth of timm's ViT sizes
    "tiny": (192, 12), "small": (384, 12), "medium": (512, 12), "base": (768, 12),
    "large": (1024, 24), "huge": (1280, 32), "giant": (1408, 40),
}
_NAME = re.compile(r"^(?:vit|deit|deit3)_(tiny|small|medium|base|large|huge|giant)_patch(\d+)(?:_[a-z0-9]+)*?_(\d+)(?:_|$)")


# Issue 26's measured time ratios (new / baseline, one pair, vit_tiny_patch16_224, random init,
# 2-core CPU VM, fp32 loop; BENCHMARKS.md): what the pass counts above are checked against.
MEASURED_RATIOS = {
    "null_jacobian_fp32_over_float64": 0.26,  # the Jacobian alone: one forward + 192 vmap'd rows vs 192 float64 rows (before the kernel swaps of sweep/probes/vmap_kernels.py; about 0.2 now)
    "null_family_fp32_over_float64": 0.254,  # lipschitz families [null], 4 directions, default h grid, per pair
    "path_linearity_over_match300": 0.062,  # K = 17 (34 forwards, 1 JVP) vs a 300-step match of the pair
    "walk_over_match300": 0.55,  # 20 steps, corrector 3, walk_k 8, 4 rounds, as it ran (stopped early)
}


def vit_gflop(model: str) -> float | None:
    """GFLOP of one matching step (forward + backward to the input) of a timm ViT named like
    `vit_base_patch16_224[.tag]`, from its width w, depth L and tokens N = (res / patch)^2 + 1:
    forward MACs = L * (12 N w^2 + 2 N^2 w), FLOP = 2 MACs, step = 2 forwards. None if unknown."""
    base = model.split(".", 1)[0]
    m = _NAME.match(base)
    if not m:
        return None
    width, depth = _SIZES[m.group(1)]
    tokens = (int(m.group(3)) // int(m.group(2))) ** 2 + 1
    macs = depth * (12 * tokens * width**2 + 2 * tokens**2 * width)
    return 2 * 2 * macs / 1e9


def table_rates(model: str) -> Rates | None:
    """Rates for `model` on an H100 from the measured table, scaled by FLOP where not measured."""
    base = model.split(".", 1)[0]
    if base in _MEASURED:
        bf16, compiled, source = _MEASURED[base]
        note = f"{base}: {source}; fp32, forward and jvp derived (sweep/planning/rates.py)"
    else:
        gflop, ref = vit_gflop(base), vit_gflop("vit_base_patch16_224")
        if gflop is None or ref is None:
            return None
        ref_bf16, ref_compiled, _ = _MEASURED["vit_base_patch16_224"]
        bf16, compiled = ref_bf16 * ref / gflop, ref_compiled * ref / gflop
        note = (f"{base}: derived from ViT-B/16's measured H100 rate scaled by FLOP "
                f"({gflop:.0f} vs {ref:.0f} GFLOP per step; sweep/planning/rates.py)")
    fp32 = bf16 * FP32_OVER_BF16
    return Rates(step_bf16=bf16, step_fp32=fp32, forward=2 * fp32, jvp=fp32, step_compiled=compiled,
                 source=f"rate table, {DEVICE}: {note}")
