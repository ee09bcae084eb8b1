"""Benchmark: the geometry work of issue 26, as ratios measured in one run on one machine.

- `null`: the `lipschitz` family `null` (4 directions, the default h grid) with the default fp32
  Jacobian (one forward, D backward rows batched, float64 Gram J J^T) against the former explicit
  float64 Jacobian (`jacobian: float64`: D float64 forward + backward rows, SVD), per pair.
  Goal: <= 0.25x.
- `path`: path linearity with K points (default 17) against a 300-step `match` of the same pair.
  Goal: <= 0.1x.
- `walk`: an equivalence walk of 20 steps against that match. Goal: <= 1x.

The two sides of each ratio alternate `--repeats` times and the best time of each counts (a
shared machine's load drifts). Prints one JSON line with the machine, the load average and the
figures.

    python -m benchmarks.bench_geometry                       # vit_tiny, random init, CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import torch

from benchmarks.common import random_pairs, timed
from sweep.encoders import load_encoder
from sweep.probes import build_probe


def best_of(device: torch.device, repeats: int, *fns: Any) -> list[float]:
    """Best wall time of each fn, the fns alternated `repeats` times."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _, elapsed = timed(device, fn)
            best[i] = min(best[i], elapsed)
    return best


def run_probe(name: str, params: dict[str, Any], encoder: Any, pairs: list, batch: int) -> list:
    results = list(build_probe(name, params).run(encoder, pairs, batch_size=batch, seed=0))
    assert all(r.error is None for r in results), [r.error for r in results]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", default="null,path,walk")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    encoder = load_encoder(args.model, "random:0", device=args.device)
    device = encoder.device
    pairs = random_pairs(encoder.input_size, 1, torch.Generator().manual_seed(0))
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "machine": platform.machine(), "cores": os.cpu_count(), "load_average_start": os.getloadavg(),
        "torch": torch.__version__, "model": args.model, "batch": args.batch, "repeats": args.repeats,
    }
    cases = set(args.cases.split(","))
    if "null" in cases:
        params = {"families": ["null"], "n_null": 4}
        run_probe("lipschitz", {**params, "h": [1.0]}, encoder, pairs, args.batch)  # warm-up
        fast_rows: list = []
        exact_rows: list = []
        t_fast, t_exact = best_of(
            device, args.repeats,
            lambda: fast_rows.__setitem__(slice(None), run_probe("lipschitz", params, encoder, pairs, args.batch)),
            lambda: exact_rows.__setitem__(slice(None), run_probe("lipschitz", {**params, "jacobian": "float64"}, encoder, pairs, args.batch)),
        )
        fast, exact = fast_rows[0], exact_rows[0]
        s_fast, s_exact = fast.extra["singular_values"].double(), exact.extra["singular_values"].double()
        figures["null"] = {
            "fp32_gram_s_per_pair": round(t_fast, 3), "float64_svd_s_per_pair": round(t_exact, 3),
            "ratio": round(t_fast / t_exact, 3),
            "max_jv_residual_fp32": max(r["jv_residual"] for r in fast.rows),
            "max_jv_residual_float64": max(r["jv_residual"] for r in exact.rows),
            "spectrum_max_abs_diff_over_sigma1": float((s_fast - s_exact[: len(s_fast)]).abs().max() / s_exact[0]),
            "rank_fp32": fast.extra["rank"], "rank_float64": exact.extra["rank"],
        }
        print(json.dumps({"null": figures["null"]}), flush=True)
    if cases & {"path", "walk"}:
        from sweep.probes.common import embed_fp32, item_generator
        from sweep.probes.equivalence import EquivalenceParams, equivalence_walk, path_linearity

        pair = pairs[0]
        src, tgt = pair.src.to(device), pair.tgt.to(device)
        unreachable = {"max_steps": 300, "rho": 1e-9, "min_cos": 1.0}  # all 300 steps
        matched: list = []
        run_probe("match", {**unreachable, "max_steps": 2}, encoder, pairs, 1)  # warm-up
        e0, e_t = embed_fp32(encoder, torch.stack([src, tgt])).unbind(0)
        dist = float((e0 - e_t).norm())
        p = EquivalenceParams()
        fns = [lambda: matched.__setitem__(slice(None), run_probe("match", unreachable, encoder, pairs, 1))]
        if "path" in cases:
            fns.append(lambda: path_linearity(encoder, src, tgt, matched[0].images["adv"].to(device), 17))
        if "walk" in cases:
            fns.append(lambda: equivalence_walk(encoder, src, e0, dist, p, item_generator(0, "walk", pair.pair_id)))
        fns[0]()  # the match's x_matched for the path
        times = best_of(device, args.repeats, *fns)
        figures["match_300_steps_s"] = round(times[0], 3)
        i = 1
        if "path" in cases:
            figures["path"] = {"points": 17, "s": round(times[i], 3), "ratio_to_match_300": round(times[i] / times[0], 4)}
            i += 1
        if "walk" in cases:
            figures["walk"] = {"steps": p.walk_steps, "corrector": p.corrector, "walk_k": p.walk_k, "walk_iters": p.walk_iters,
                               "s": round(times[i], 3), "ratio_to_match_300": round(times[i] / times[0], 4)}
    figures["load_average_end"] = os.getloadavg()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
