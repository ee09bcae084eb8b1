"""Benchmark: `perturb` batched across pairs against running it one pair at a time.

The same probe, parameters and pairs in this process: once over all pairs (the continuous loop's
slots hold (pair, eps) items of many pairs; the random baseline embeds draws x items of all pairs
finishing together, `--batch` rows at a time) and once called pair by pair with the same batch
size (the batch then holds only that pair's eps items: how a one-pair loop runs). Prints pairs/s
of each and their ratio; image-passes/s (every image row through the model: forward + backward
in a PGD step, forward for the clean, final and random-baseline embeddings) against the plain
batched fp32 forward + backward step of the same model; and the largest relative difference
between the two runs' numbers.

    python -m benchmarks.bench_perturb                                  # CPU: vit_tiny
    python -m benchmarks.bench_perturb --model vit_base_patch16_224 --batch 256 --pairs 128 \
        --ref-pairs 8 --steps 20 --draws 8                                  # GPU
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks.common import random_pairs, timed
from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput
from sweep.probes.common import autocast

COMPARED = ("emb_disp", "rel_disp", "disp_over_pair", "random_disp", "random_norm", "cos_after", "delta_norm", "pix_l2", "pix_linf")


def count_passes(encoder: Any) -> list[int]:
    """Count image rows through the encoder's forward (the fp32 path and the loop's path)."""
    counter = [0]
    for name in ("embed_normalized", "loop_embed_normalized"):
        original = getattr(encoder, name)

        def counted(x: torch.Tensor, _original: Any = original) -> torch.Tensor:
            counter[0] += len(x)
            return _original(x)

        setattr(encoder, name, counted)
    return counter


def plain_step_rate(encoder: Any, pairs: list[PairInput], precision: str, repeats: int) -> float:
    x = torch.stack([p.src for p in pairs]).to(encoder.device)
    with torch.no_grad():
        e0 = encoder.embed(x)

    def one() -> None:
        xg = x.detach().requires_grad_(True)
        with autocast(encoder.device, precision):
            e = encoder.loop_embed(xg)
        torch.autograd.grad(0.5 * (e.float() - e0).pow(2).sum(), xg)

    one()
    _, elapsed = timed(encoder.device, lambda: [one() for _ in range(repeats)])
    return repeats * len(pairs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--ref-pairs", type=int, default=None, help="pairs run one at a time (default: all)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this often, keep the best time of each")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    encoder = load_encoder(args.model, "random:0", device=args.device)
    device = encoder.device
    g = torch.Generator().manual_seed(0)
    size = encoder.input_size
    pairs = random_pairs(size, args.pairs, g)
    eps = [2 / 255, 8 / 255] if args.norm == "linf" else [0.5, 2.0]
    probe = build_probe("perturb", {"norm": args.norm, "eps": eps, "steps": args.steps, "random_draws": args.draws, "precision": args.precision})
    precision = probe.params.precision
    plain = plain_step_rate(encoder, (pairs * args.batch)[: args.batch], precision, 3)  # a full batch
    counter = count_passes(encoder)
    list(probe.run(encoder, pairs[:1], batch_size=args.batch))  # warm-up
    counter[0] = 0
    ref = pairs[: args.ref_pairs or args.pairs]
    t_batched = t_alone = float("inf")
    passes_batched = passes_alone = 0
    for _ in range(args.repeats):  # alternated, best of each: a shared machine's load drifts
        batched, elapsed = timed(device, lambda: {r.pair_id: r for r in probe.run(encoder, pairs, batch_size=args.batch)})
        t_batched, passes_batched, counter[0] = min(t_batched, elapsed), counter[0], 0
        alone, elapsed = timed(device, lambda: {r.pair_id: r for p in ref for r in probe.run(encoder, [p], batch_size=args.batch)})
        t_alone, passes_alone, counter[0] = min(t_alone, elapsed), counter[0], 0
    worst, worst_key = 0.0, None
    for pair_id, other in alone.items():
        for a, b in zip(batched[pair_id].rows, other.rows):
            for key in COMPARED:
                diff = abs(a[key] - b[key]) / max(abs(b[key]), 1e-30)
                if diff > worst:
                    worst, worst_key = diff, key
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__, "model": args.model, "batch": args.batch, "pairs": args.pairs, "eps": eps,
        "norm": args.norm, "steps": args.steps, "draws": args.draws, "repeats": args.repeats,
        "batched_pairs_per_s": round(args.pairs / t_batched, 4),
        "one_pair_pairs": len(ref),
        "one_pair_pairs_per_s": round(len(ref) / t_alone, 4),
        "pairs_per_s_ratio": round((args.pairs / t_batched) / (len(ref) / t_alone), 3),
        "image_passes_per_pair": passes_batched // args.pairs,
        "batched_image_passes_per_s": round(passes_batched / t_batched, 2),
        "one_pair_image_passes_per_s": round(passes_alone / t_alone, 2),
        "one_pair_image_passes_per_pair": passes_alone // len(ref),
        "plain_fwd_bwd_images_per_s": round(plain, 2),
        "batched_over_plain": round(passes_batched / t_batched / plain, 3),
        "max_rel_diff": worst, "max_rel_diff_column": worst_key,
    }
    print(json.dumps(figures))
    print(f"{args.pairs} pairs: batched {figures['batched_pairs_per_s']} pairs/s vs one pair at a time "
          f"{figures['one_pair_pairs_per_s']} ({figures['pairs_per_s_ratio']}x); image-passes/s "
          f"{figures['batched_image_passes_per_s']} = {figures['batched_over_plain']} of the plain step; max rel diff {worst:.2e} ({worst_key})")


if __name__ == "__main__":
    main()
