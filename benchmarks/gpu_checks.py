"""Correctness checks of the probes on a CUDA device (run on a GPU machine; prints one JSON object).

- match in bf16 autocast: the reported numbers are fp32 re-computations at the final image;
- match in fp32: a batch with slot refills equals the pairs run one at a time;
- lipschitz: the JVP path (fused attention switched off) and finite differences agree, and rows
  of pairs batched together equal the pair run alone (float64: to 1e-9 relative);
- perturb: eps-balls and [0, 1] bounds hold.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from sweep.encoders import load_encoder
from sweep.probes import build_probe
from sweep.probes.base import PairInput


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA device"
    enc = load_encoder("vit_tiny_patch16_224", "random:0", device="cuda")
    g = torch.Generator().manual_seed(0)
    pairs = [PairInput(f"p{i}", torch.rand(3, 224, 224, generator=g), torch.rand(3, 224, 224, generator=g)) for i in range(12)]
    out: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    bf16 = {r.pair_id: r for r in build_probe("match", {"max_steps": 300}).run(enc, pairs, batch_size=8)}
    worst = 0.0
    for pair in pairs:
        r = bf16[pair.pair_id]
        with torch.no_grad():
            e_x = enc.embed(r.images["adv"][None].cuda())
            e_t = enc.embed(pair.tgt[None].cuda())
        worst = max(worst, abs(float(F.cosine_similarity(e_x, e_t)) - r.rows[0]["cos"]))
    out["bf16_match_success"] = sum(r.rows[0]["success"] for r in bf16.values()) / len(pairs)
    out["bf16_match_min_cos"] = min(r.rows[0]["cos"] for r in bf16.values())
    out["bf16_reported_vs_fp32_recheck_max_abs_cos_diff"] = worst

    probe = build_probe("match", {"max_steps": 60, "precision": "fp32", "rho": 0.2, "min_cos": 0.95})
    probe.sync_every = 3
    batched = {r.pair_id: r for r in probe.run(enc, pairs[:6], batch_size=4)}
    diffs, same_steps = [], True
    for pair in pairs[:6]:
        (alone,) = list(probe.run(enc, [pair], batch_size=1))
        same_steps &= alone.rows[0]["steps"] == batched[pair.pair_id].rows[0]["steps"]
        diffs.append(float((alone.images["adv"] - batched[pair.pair_id].images["adv"]).abs().max()))
    out["fp32_batched_vs_alone_same_steps"] = bool(same_steps)
    out["fp32_batched_vs_alone_max_pixel_diff"] = max(diffs)
    out["fp32_steps"] = sorted(r.rows[0]["steps"] for r in batched.values())

    (lip,) = list(build_probe("lipschitz", {"iters": 10, "h": [0.01, 1.0]}).run(enc, pairs[:1], batch_size=16))
    small_h = [r for r in lip.rows if r["h"] == 0.01]
    out["lipschitz_sigmas"] = lip.extra["sigmas"]
    out["lipschitz_max_nonlinearity_h0.01"] = max(r["nonlinearity"] for r in small_h)
    out["lipschitz_top_over_median_random"] = lip.extra["sigmas"][0] / sorted(r["l_jvp"] for r in small_h if r["family"] == "random")[2]

    lip_probe = build_probe("lipschitz", {"families": ["random", "top", "grad", "null"], "iters": 4, "h": [0.01, 1.0], "top_k": 2})
    together = {r.pair_id: r for r in lip_probe.run(enc, pairs[:3], batch_size=100)}  # 192 Jacobian rows: remainders mix pairs
    (alone,) = list(lip_probe.run(enc, pairs[1:2], batch_size=100))
    worst_lip = 0.0
    for a, b in zip(together["p1"].rows, alone.rows):
        for key in ("l_fd", "l_jvp", "sigma"):
            if a[key] is not None and a["family"] != "null":
                worst_lip = max(worst_lip, abs(a[key] - b[key]) / abs(b[key]))
    out["lipschitz_batched_vs_alone_max_rel_diff"] = worst_lip

    eps = 4 / 255
    worst_linf, in_bounds = 0.0, True
    for r in build_probe("perturb", {"eps": [eps], "steps": 10}).run(enc, pairs[:8], batch_size=8):
        worst_linf = max(worst_linf, float((r.images["adv"] - r.images["src"]).abs().max()))
        in_bounds &= bool(r.images["adv"].min() >= 0 and r.images["adv"].max() <= 1)
    out["perturb_linf_within_eps"] = worst_linf <= eps + 1e-6
    out["perturb_in_bounds"] = in_bounds
    print(json.dumps(out))


if __name__ == "__main__":
    main()
