"""Benchmark (issue 23): what zero-shot labels and the transfer pass add to a run, as ratios, in
one run through the real code path (run_unit, then the transfer pass; no Ray).

Two vit_tiny-sized CLIP-shaped image towers (timm VisionTransformer, vit_tiny's shape: 224^2,
patch 16, width 192, 12 blocks, 3 heads; random init, two seeds) with a random bias-free 192 -> 512
image-text projection (`clip_projection`, as a CLIP tower of that width has), each with zero-shot
labels from a tiny random open_clip text tower over open_clip's 1000 ImageNet class names. Both
run a `match` unit on the same shard (thresholds out of reach: every pair runs `--steps` steps),
with `transfer: true`; then the transfer pass evaluates each matched image on both models.

Reported:
- zero-shot: seconds inside `ZeroShot.labels` (projection, (B, D) x (D, C), softmax, names
  excluded) during the match units, over the units' seconds; the one-off classifier build
  (cached in the run) separately;
- transfer: the pass's seconds over the match units' seconds, and per (pair, model) next to
  seconds per pair of the match: one forward of the matched image (+2 of the clean images).

    python -m benchmarks.bench_transfer                    # 8 pairs, 10 steps, 2 threads
    python -m benchmarks.bench_transfer --pairs 16 --steps 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import timm.models.vision_transformer as vt
import torch
from torch import nn

from sweep.finished.transfer import transfer_run
from sweep.run import zeroshot as run_zs
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import make_shards, write_spec


class ClipTinyTower(nn.Module):
    """vit_tiny's shape, random init, plus a CLIP image-text projection (192 -> 512)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vit = vt.VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3,
                                            num_classes=0)
            self.clip_projection = nn.Linear(192, 512, bias=False)
        self.input_size = (3, 224, 224)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - 0.5) / 0.5
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def tower_a() -> nn.Module:
    return ClipTinyTower(0)


def tower_b() -> nn.Module:
    return ClipTinyTower(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--templates", default="simple", choices=["simple", "openai"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    make_shards(tmp / "shards", 1, args.pairs, size=224)
    models = [{"name": f"benchmarks.bench_transfer:{t}", "weights": "factory", "text": "tiny:0",
               "classes": "imagenet", "templates": args.templates} for t in ("tower_a", "tower_b")]
    match = {"name": "match", "params": {"max_steps": args.steps, "log_every": max(1, args.steps),
                                         "rho": 1e-9, "min_cos": 1.0}}
    loaded = load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", models=models,
                                  probes=[match], transfer=True, gallery=0, batch_size=args.batch))
    store = RunStore(tmp / "run")
    cache = EncoderCache("cpu")
    t0 = time.perf_counter()  # the one-off classifier builds (cached in the run; not in the ratio)
    for m in loaded.spec.models:
        cache.get(m.name, m.weights, m.embed, False, m.head, text=(m.text, m.classes, m.templates), store=store)
    build_s = time.perf_counter() - t0

    zs_seconds = [0.0]
    labels = run_zs.ZeroShot.labels

    def timed_labels(self, pre_logits):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return labels(self, pre_logits)
        finally:
            zs_seconds[0] += time.perf_counter() - start

    run_zs.ZeroShot.labels = timed_labels  # type: ignore[method-assign]
    t0 = time.perf_counter()
    for unit in loaded.units:
        assert run_unit(unit, cache, store, run_id="bench").status == "ok"
    units_s = time.perf_counter() - t0
    run_zs.ZeroShot.labels = labels  # type: ignore[method-assign]

    t0 = time.perf_counter()
    summary = transfer_run(store, loaded, device="cpu", batch=args.batch)
    transfer_s = time.perf_counter() - t0
    n_pairs_models = summary.n_images * summary.n_models
    out = {
        "machine": "cpu", "threads": args.threads, "pairs": args.pairs, "steps": args.steps, "models": 2,
        "classes": 1000, "templates": args.templates,
        "match_units_s": round(units_s, 2), "match_s_per_pair": round(units_s / (2 * args.pairs), 3),
        "zeroshot_labels_s": round(zs_seconds[0], 4), "zeroshot_ratio": zs_seconds[0] / units_s,
        "classifier_build_s": round(build_s, 2),
        "transfer_s": round(transfer_s, 2), "transfer_rows": summary.n_rows, "transfer_forwards": summary.forwards,
        "transfer_s_per_pair_model": round(transfer_s / max(1, n_pairs_models), 4),
        "transfer_ratio": transfer_s / units_s,
    }
    print(json.dumps(out, indent=1))
    print(f"zero-shot labels: {100 * out['zeroshot_ratio']:.3f}% of the match units' time (goal <= 5%); "
          f"transfer pass: {100 * out['transfer_ratio']:.2f}% of the match units' time "
          f"({out['transfer_s_per_pair_model']} s per (pair, model) vs {out['match_s_per_pair']} s per match pair "
          f"at {args.steps} steps)")


if __name__ == "__main__":
    main()
