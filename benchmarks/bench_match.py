"""Benchmark: the batched `match` loop against the authors' one-pair reference loop.

Both run the paper preset's stopping rule (||f(x) - f(t)||^2 < tau and cos > min_cos, or
max_steps) on the same pairs; the reference is the authors' loop shape: batch 1, fp32, an extra
no-grad forward per step for the stopping test. Prints image-steps/s for each, their ratio, and
peak memory (GPU: torch.cuda.max_memory_allocated; CPU: the process's peak RSS).

    python -m benchmarks.bench_match                                   # CPU: vit_tiny, batch 16
    python -m benchmarks.bench_match --model vit_base_patch16_224 --batch 256 --pairs 512 \
        --ref-pairs 4 --steps 100 --compile                            # GPU
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import peak_memory_mb, random_pairs, sync
from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput
from tests.support.reference import authors_match_loop


def reference_loop(encoder, pairs: list[PairInput], lr: float, tau: float, min_cos: float, max_steps: int) -> int:
    """The authors' loop (tests/support/reference.py) on each pair in turn; the steps taken in all."""
    return sum(authors_match_loop(encoder, p.src, p.tgt, lr, tau, min_cos, max_steps)[1] for p in pairs)


def plain_step_rate(encoder, pairs: list[PairInput], precision: str, repeats: int) -> float:
    """A bare batched step (forward + backward to the input, no loop bookkeeping), for scale."""
    from sweep.probes.common import autocast

    x = torch.stack([p.src for p in pairs]).to(encoder.device)
    e_t = torch.stack([p.tgt for p in pairs]).to(encoder.device)
    with torch.no_grad():
        e_t = encoder.embed(e_t)

    def one() -> None:
        xg = x.detach().requires_grad_(True)
        with autocast(encoder.device, precision):
            e = encoder.loop_embed_normalized(xg)
        torch.autograd.grad(((e.float() - e_t) ** 2).mean(dim=-1).sum(), xg)

    for _ in range(2):
        one()
    sync(encoder.device)
    start = time.perf_counter()
    for _ in range(repeats):
        one()
    sync(encoder.device)
    return repeats * len(pairs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=32, help="pairs for the batched loop")
    parser.add_argument("--ref-pairs", type=int, default=8, help="the first N of the same pairs, for the reference loop")
    parser.add_argument("--steps", type=int, default=20, help="max_steps (thresholds are set out of reach)")
    parser.add_argument("--lr", type=float, default=0.08)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the batched loop's forward")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    encoder = load_encoder(args.model, "random:0", device=args.device)
    device = encoder.device
    g = torch.Generator().manual_seed(0)
    size = encoder.input_size
    pairs = random_pairs(size, args.pairs, g)
    tau, min_cos = 1e-12, 0.9999999  # out of reach: every pair runs max_steps, in both loops alike
    # The paper preset's own default is fp32 (its tau is below bf16's error); for speed on a GPU
    # this benchmark runs its loop in bf16 unless told otherwise.
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    params = {"preset": "paper", "lr": args.lr, "tau": tau, "min_cos": min_cos, "max_steps": args.steps, "precision": precision}
    figures: dict[str, object] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
                                  "torch": torch.__version__, "model": args.model, "batch": args.batch, "steps": args.steps}

    # Reference: warm up with one short pair, then time.
    reference_loop(encoder, pairs[:1], args.lr, tau, min_cos, 2)
    sync(device)
    start = time.perf_counter()
    ref_steps = reference_loop(encoder, pairs[: args.ref_pairs], args.lr, tau, min_cos, args.steps)
    sync(device)
    ref_rate = ref_steps / (time.perf_counter() - start)
    figures.update(ref_image_steps_per_s=round(ref_rate, 2), ref_peak_mb=round(peak_memory_mb(device), 1))

    if args.compile:
        encoder.compile()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    plain = plain_step_rate(encoder, pairs[: args.batch], precision, repeats=max(3, args.steps // 5))
    figures.update(plain_step_image_steps_per_s=round(plain, 2))
    probe = build_probe("match", params)
    warm = build_probe("match", {**params, "max_steps": 3})
    list(warm.run(encoder, pairs[: args.batch], batch_size=args.batch))  # warm-up (and compile)
    sync(device)
    start = time.perf_counter()
    results = list(probe.run(encoder, pairs, batch_size=args.batch))
    sync(device)
    elapsed = time.perf_counter() - start
    batched_steps = sum(r.rows[0]["steps"] for r in results)
    rate = batched_steps / elapsed
    figures.update(
        batched_image_steps_per_s=round(rate, 2),
        batched_peak_mb=round(peak_memory_mb(device), 1),
        ratio=round(rate / ref_rate, 2),
        loop_over_plain_step=round(rate / plain, 3),
        precision=precision,
        compiled=args.compile,
    )
    print(json.dumps(figures))
    print(
        f"{figures['device']}: {args.model} reference {ref_rate:.1f} image-steps/s, "
        f"batched (batch {args.batch}) {rate:.1f} image-steps/s, ratio {rate / ref_rate:.2f}x"
    )


if __name__ == "__main__":
    main()
