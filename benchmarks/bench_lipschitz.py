"""Benchmark: `lipschitz` batched across pairs against the one-pair-at-a-time probe it replaced.

Both versions run the same parameters on the same pairs in this process: the batched probe
(rows of many pairs share batches of `--batch`) and the frozen copy of the former probe in
benchmarks/lipschitz_one_pair.py (one pair at a time, its own rows chunked to `--batch`). Prints
pairs/s of each and their ratio; image-passes/s (every float64 image row through the model: a
forward, a forward-mode JVP or a forward + backward VJP) against a plain batched float64
forward + backward step (a VJP of `--batch` rows, no probe around it) and the plain fp32 step;
and the largest relative difference between the two versions' estimates (must be <= 1e-5).

Two cases: the cheap families (`random`, `top` by subspace iteration, `grad`, `off_top`) on
`--pairs` pairs of `--model`, and `null` (D Jacobian rows per pair, then SVD) on `--null-pairs`
pairs of `--null-model` (default: the same model; on a small CPU the test suite's 32-pixel
`tests.support.tiny_models:tiny_vit`, D = 48, keeps the D reverse-mode rows per pair affordable).

    python -m benchmarks.bench_lipschitz                          # CPU: vit_tiny, small settings
    python -m benchmarks.bench_lipschitz --model vit_base_patch16_224 --batch 256 --pairs 64 \
        --ref-pairs 4 --iters 20 --null-pairs 2                   # GPU
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks.common import random_pairs, timed
from benchmarks.lipschitz_one_pair import Float64Encoder as OldFloat64Encoder
from benchmarks.lipschitz_one_pair import OnePairLipschitz
from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes import lipschitz as new_module
from sweep.probes.base import PairInput

ESTIMATES = ("l_fd", "l_jvp", "sigma", "fd_floor")


class PassCounter:
    """Counts image rows through a Float64Encoder's embed (one image-pass each)."""

    def __init__(self, cls: Any) -> None:
        self.count = 0
        original = cls.embed

        def embed(encoder: Any, pixels: torch.Tensor) -> torch.Tensor:
            self.count += len(pixels)
            return original(encoder, pixels)

        cls.embed = embed


def plain_step_rate(encoder: Any, pairs: list[PairInput], dtype: torch.dtype, repeats: int) -> float:
    """A bare batched forward + backward to the input (rows independent), images per second."""
    module = new_module.Float64Encoder(encoder) if dtype == torch.float64 else encoder
    x = torch.stack([p.src for p in pairs]).to(encoder.device, dtype)
    w = torch.randn(len(pairs), encoder.embed(x[:1].float()).shape[-1], dtype=dtype, device=encoder.device)

    def one() -> None:
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad((module.embed(xg) * w).sum(), xg)

    one()
    _, elapsed = timed(encoder.device, lambda: [one() for _ in range(repeats)])
    return repeats * len(pairs) / elapsed


def compare(new: dict[str, Any], old: dict[str, Any]) -> dict[str, float]:
    """Largest relative difference of the estimates over all rows (null rows: l_jvp and l_fd
    relative to sigma_1, since ||J v|| there is round-off), and whether every row matched."""
    worst, worst_null, same_none = 0.0, 0.0, True
    for pair_id, result in new.items():
        other = old[pair_id]
        assert len(result.rows) == len(other.rows) and result.error is None and other.error is None
        sigma1 = max(result.extra["sigmas"][:1] or [1.0])
        for a, b in zip(result.rows, other.rows):
            assert (a["family"], a["direction"], a["h"]) == (b["family"], b["direction"], b["h"])
            same_none &= (a["nonlinearity"] is None) == (b["nonlinearity"] is None) and a["rank"] == b["rank"]
            for key in ESTIMATES:
                if a[key] is None or b[key] is None:
                    same_none &= a[key] is None and b[key] is None
                    continue
                if a["family"] == "null" and key in ("l_jvp", "l_fd"):
                    worst_null = max(worst_null, abs(a[key] - b[key]) / sigma1)
                else:
                    worst = max(worst, abs(a[key] - b[key]) / max(abs(b[key]), 1e-300))
    return {"max_rel_diff": worst, "null_max_abs_diff_over_sigma1": worst_null, "same_rows": bool(same_none)}


def run_case(
    encoder: Any, pairs: list[PairInput], params: dict[str, Any], batch: int, counters: tuple[PassCounter, PassCounter],
    ref_pairs: int, repeats: int = 1,
) -> dict[str, Any]:
    """The batched probe on all pairs, the one-pair baseline on the first `ref_pairs` of them."""
    device = encoder.device
    new_probe = build_probe("lipschitz", params)
    old_probe = OnePairLipschitz(new_probe.params)
    list(new_probe.run(encoder, pairs[:1], batch_size=batch, seed=0))  # warm-up
    new_count, old_count = counters
    new_count.count = old_count.count = 0
    ref = pairs[: max(1, ref_pairs)]
    t_new = t_old = float("inf")
    for _ in range(repeats):  # alternated, best of each: a shared machine's load drifts
        new, elapsed = timed(device, lambda: {r.pair_id: r for r in new_probe.run(encoder, pairs, batch_size=batch, seed=0)})
        t_new = min(t_new, elapsed)
        old, elapsed = timed(device, lambda: {r.pair_id: r for p in ref for r in old_probe.run(encoder, [p], batch_size=batch, seed=0)})
        t_old = min(t_old, elapsed)
    new_count.count //= repeats
    old_count.count //= repeats
    return {
        "pairs": len(pairs), "one_pair_pairs": len(ref),
        "batched_pairs_per_s": round(len(pairs) / t_new, 4),
        "one_pair_pairs_per_s": round(len(ref) / t_old, 4),
        "pairs_per_s_ratio": round((len(pairs) / t_new) / (len(ref) / t_old), 3),
        "batched_image_passes_per_s": round(new_count.count / t_new, 2),
        "one_pair_image_passes_per_s": round(old_count.count / t_old, 2),
        "image_passes_per_pair": (new_count.count // len(pairs), old_count.count // len(ref)),
        **compare({k: new[k] for k in old}, old),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--ref-pairs", type=int, default=None, help="pairs of the one-pair baseline (default: all)")
    parser.add_argument("--null-pairs", type=int, default=3, help="pairs of the `null` case (0: skip it)")
    parser.add_argument("--null-model", default=None, help="model of the `null` case (default: --model)")
    parser.add_argument("--null-batch", type=int, default=None, help="batch of the `null` case (default: --batch)")
    parser.add_argument("--iters", type=int, default=2, help="subspace iterations of `top`")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two versions this often, keep the best time of each")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    encoder = load_encoder(args.model, "random:0", device=args.device)
    device = encoder.device
    g = torch.Generator().manual_seed(0)
    size = encoder.input_size
    pairs = random_pairs(size, args.pairs, g)
    counters = (PassCounter(new_module.Float64Encoder), PassCounter(OldFloat64Encoder))
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__, "model": args.model, "batch": args.batch, "repeats": args.repeats,
    }
    figures["plain_fwd_bwd_float64_images_per_s"] = round(plain_step_rate(encoder, pairs[:1] * args.batch, torch.float64, 3), 2)
    figures["plain_fwd_bwd_fp32_images_per_s"] = round(plain_step_rate(encoder, pairs[:1] * args.batch, torch.float32, 3), 2)
    common = {"h": [0.01, 1.0], "top_k": 2, "oversample": 2, "n_random": 1, "n_null": 1}
    cheap = run_case(encoder, pairs[: args.pairs], {**common, "families": ["random", "top", "grad", "off_top"], "iters": args.iters}, args.batch, counters,
                     args.ref_pairs or args.pairs, args.repeats)
    cheap["batched_over_plain_float64"] = round(cheap["batched_image_passes_per_s"] / figures["plain_fwd_bwd_float64_images_per_s"], 3)
    figures["families_random_top_grad_off_top"] = cheap
    if args.null_pairs:
        null_model = args.null_model or args.model
        null_encoder = encoder if null_model == args.model else load_encoder(null_model, "random:0", device=args.device)
        size = null_encoder.input_size
        null_pairs = random_pairs(size, args.null_pairs, g, prefix="n")
        null_batch = args.null_batch or args.batch
        plain = plain_step_rate(null_encoder, null_pairs[:1] * null_batch, torch.float64, 3)
        null = run_case(null_encoder, null_pairs, {**common, "families": ["null"]}, null_batch, counters, args.null_pairs, args.repeats)
        null.update(model=null_model, batch=null_batch, plain_fwd_bwd_float64_images_per_s=round(plain, 2),
                    batched_over_plain_float64=round(null["batched_image_passes_per_s"] / plain, 3))
        figures["family_null"] = null
    print(json.dumps(figures))
    for name in ("families_random_top_grad_off_top", "family_null"):
        if name in figures:
            f = figures[name]
            print(f"{name}: {f['pairs']} pairs, batched {f['batched_pairs_per_s']} pairs/s vs one pair at a time "
                  f"{f['one_pair_pairs_per_s']} ({f['pairs_per_s_ratio']}x); image-passes/s {f['batched_image_passes_per_s']} "
                  f"= {f['batched_over_plain_float64']} of the plain float64 step; max rel diff {f['max_rel_diff']:.2e}")


if __name__ == "__main__":
    main()
