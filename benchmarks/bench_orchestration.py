"""Orchestration overhead: pairs/s through the whole pipeline (read, decode, probe, k-NN, Parquet
writes) with a trivial encoder, on a local Ray versus the plain worker function in a loop.

    .venv/bin/python -m benchmarks.bench_orchestration [--shards 8] [--pairs 250] [--actors 2]

The encoder is `tests.support.encoders:linear_encoder` (8x8 pixels -> 16-d, a linear map), so
the probe costs next to nothing and what is measured is the framework: shard reading and image
decoding, the probe's outer routine, row building, k-NN, Parquet writes, and (for Ray) actor
start-up, scheduling and result passing. Figures reported:

- baseline: `run_unit` called in a loop in this process (no Ray), pairs / wall time;
- ray sweep: `sweep.run.driver.run_sweep` (what `vitsweep run` calls) on a local Ray; pairs /
  time from the first unit's start to the last unit's end (from the units table), and pairs /
  wall time including Ray's start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.support.sweeps import make_shards, read_table, write_spec

PROBES = [{"name": "perturb", "params": {"eps": [0.03], "steps": 2, "random_draws": 1}}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=250, help="pairs per shard")
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from sweep.run.driver import run_sweep
    from sweep.run.spec import load_spec
    from sweep.run.worker import EncoderCache, run_unit

    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    cleanup = [str(tmp)]
    try:
        make_shards(tmp / "shards", args.shards, args.pairs)
        total = args.shards * args.pairs

        spec = write_spec(tmp / "base.yaml", str(tmp / "shards"), tmp / "base", probes=PROBES, batch_size=args.batch_size)
        loaded = load_spec(spec)
        cache = EncoderCache("cpu")
        run_unit(loaded.units[0], cache, str(tmp / "warmup"), run_id="warmup")  # imports, first-call costs
        t0 = time.perf_counter()
        for unit in loaded.units:
            run_unit(unit, cache, str(tmp / "base"), run_id="baseline")
        baseline_s = time.perf_counter() - t0
        assert read_table(tmp / "base", "perturb").num_rows == total

        if "RAY_TMPDIR" not in os.environ:  # a short private dir (Ray's socket paths are length-limited)
            os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="vsr-", dir="/tmp")
            cleanup.append(os.environ["RAY_TMPDIR"])
        spec = write_spec(tmp / "ray.yaml", str(tmp / "shards"), tmp / "ray", probes=PROBES, batch_size=args.batch_size)
        t0 = time.perf_counter()
        outcome = run_sweep(load_spec(spec), actors=args.actors, show_progress=False)
        wall_s = time.perf_counter() - t0
        assert outcome.units_failed == 0 and read_table(tmp / "ray", "perturb").num_rows == total
        units = read_table(tmp / "ray", "units").to_pylist()
        busy_s = (max(u["finished_at"] for u in units) - min(u["started_at"] for u in units)).total_seconds()

        report = {
            "pairs": total,
            "units": len(loaded.units),
            "actors": args.actors,
            "cpus": os.cpu_count(),
            "baseline_loop_pairs_per_s": round(total / baseline_s, 1),
            "ray_sweep_pairs_per_s": round(total / busy_s, 1),
            "ray_wall_pairs_per_s_incl_startup": round(total / wall_s, 1),
            "ray_wall_s": round(wall_s, 1),
            "baseline_s": round(baseline_s, 1),
        }
        print(json.dumps(report, indent=2))
    finally:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
