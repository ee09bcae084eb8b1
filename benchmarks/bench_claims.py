"""Benchmark: the verdicts (named query `claims`) on a run of N pairs, and one median check's
exact interval (analysis/claims.py on analysis/intervals.py: order statistics, counted by image)
against a plain percentile bootstrap (the old method, as a baseline) in the same process.

Writes a synthetic run (match rows for N pairs, perturb rows at two eps, lipschitz rows for a
tenth of them) through the engine's writer, then times: the whole named query (DuckDB gathers
the per-pair values with their image keys, Python judges them), and one median check both ways
(same values). Prints seconds and both intervals.

    python -m benchmarks.bench_claims                 # 75,000 pairs, 2,000 resamples
    python -m benchmarks.bench_claims --pairs 10000 --resamples 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from analysis.claims import judge_check, load_criteria
from analysis.db import open_runs
from analysis.named import run_named
from sweep.run.store import RunStore
from sweep.schema import to_table


def write_run(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ident = {"run_id": "bench", "model": "vit_bench", "weights": "random:0", "embed": "pre_logits",
             "status": "ok", "params": "{}"}
    store = RunStore(root / "bench")
    match = [{**ident, "unit_id": "m0", "pair_id": f"p{i}", "probe": "match", "config_hash": "m",
              "success": bool(s), "psnr": float(p), "ssim": float(q), "quant_success": bool(s),
              "pred_src": int(a), "pred_tgt": int(b), "pred_adv": int(b if s else a),
              "knn_src": int(a), "knn_tgt": int(b), "knn_adv": int(b if s else a)}
             for i, (s, p, q, a, b) in enumerate(zip(rng.random(n) < 0.9, rng.normal(30, 5, n),
                                                     rng.uniform(0.5, 1, n), rng.integers(0, 1000, n),
                                                     rng.integers(0, 1000, n)))]
    store.write_unit_tables("match", "vit_bench", "m0", {"match": to_table("match", match)})
    perturb = [{**ident, "unit_id": "p0", "pair_id": f"p{i}", "probe": "perturb", "config_hash": "p",
                "norm": "linf", "eps": eps, "disp_over_pair": float(d) * eps * 255,
                "random_disp_over_pair": 0.05}
               for i, d in enumerate(rng.gamma(2, 0.5, n)) for eps in (1 / 255, 4 / 255)]
    store.write_unit_tables("perturb", "vit_bench", "p0", {"perturb": to_table("perturb", perturb)})
    lipschitz = [{**ident, "unit_id": "l0", "pair_id": f"p{i}", "probe": "lipschitz",
                  "config_hash": "l", "family": fam, "direction": d, "h": 0.1,
                  "l_jvp": float(v) * (100 if fam == "top" else 0.1)}
                 for i, v in enumerate(rng.gamma(2, 1, n // 10)) for fam in ("top", "null")
                 for d in range(2)]
    store.write_unit_tables("lipschitz", "vit_bench", "l0",
                            {"lipschitz": to_table("lipschitz", lipschitz)})
    return root / "bench"


def plain_median_bootstrap(values: np.ndarray, resamples: int, rng: np.random.Generator,
                           chunk: int = 50) -> np.ndarray:
    """The baseline: draw every resample, take its median."""
    out = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, len(values), size=(min(chunk, resamples - start), len(values)))
        out.append(np.median(values[idx], axis=1))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=75_000)
    parser.add_argument("--resamples", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp), args.pairs)
        con = open_runs([run])
        criteria = Path(tmp) / "criteria.yaml"
        criteria.write_text(f"resamples: {args.resamples}\n")
        load_criteria(criteria)
        start = time.perf_counter()
        table = run_named(con, "claims", {"criteria": str(criteria)})
        query_s = time.perf_counter() - start
    values = np.sort(np.random.default_rng(1).normal(30, 5, args.pairs))
    start = time.perf_counter()
    obs = [{"y": float(v), "s": f"s{i}", "t": f"t{i}", "p": f"p{i:07d}"} for i, v in enumerate(values)]
    check = judge_check("median_psnr", obs, 30.0, 30, load_criteria())
    fast = (check.ci_low, check.ci_high)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    reps = plain_median_bootstrap(values, args.resamples, np.random.default_rng(0))
    plain = tuple(float(x) for x in np.quantile(reps, [0.025, 0.975]))
    plain_s = time.perf_counter() - start
    print(json.dumps({
        "pairs": args.pairs, "resamples": args.resamples,
        "claims_query_s": round(query_s, 3), "claims_rows": len(table),
        "verdicts": dict(zip(table["claim"], table["verdict"])),
        "median_check_s": {"exact_by_image": round(fast_s, 4), "plain_bootstrap": round(plain_s, 3)},
        "speedup": round(plain_s / fast_s, 1),
        "interval": {"exact_by_image": [round(x, 4) for x in fast],
                     "plain_bootstrap": [round(x, 4) for x in plain]},
    }, indent=1))


if __name__ == "__main__":
    main()
