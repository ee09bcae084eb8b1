"""`vitsweep demo`: build the demo shards, run configs/demo.yaml on a local Ray, summarise it.

    vitsweep demo                      # -> demo-run/ (shards, results), a summary table
    vitsweep demo --out /tmp/demo --actors 2

All three probes on a seeded random-init ViT-Tiny (`vit_tiny_patch16_224`, weights `random:0`):
no download, under 3 minutes on 2 CPU cores. A second `vitsweep demo` into the same folder
finds everything done and only prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from sweep.errors import UserError, int_at_least

DEMO_SPEC = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
DEMO_PAIRS = 8
SHARD_SIZE = 4  # two shards: six units to spread over the actors

SUMMARY_SQL = {
    "units": """
        SELECT probe, count(*) AS units, sum(n_pairs) AS pairs, sum(n_error) AS pair_errors,
               round(sum(seconds), 1) AS seconds
        FROM units GROUP BY probe ORDER BY probe""",
    "match (equivalence)": """
        SELECT count(*) AS pairs, round(avg(success::INT), 3) AS success_rate,
               round(median(rel_dist_start), 3) AS rel_dist_start, round(median(rel_dist), 3) AS rel_dist,
               round(median(psnr), 1) AS psnr_db, round(avg((knn_adv = knn_tgt)::INT), 3) AS knn_adv_is_tgt
        FROM match WHERE status = 'ok'""",
    "perturb (normal space)": """
        SELECT norm, round(eps, 4) AS eps, count(*) AS pairs, round(median(disp_over_pair), 3) AS disp_over_pair,
               round(median(random_disp_over_pair), 4) AS random_disp_over_pair
        FROM perturb WHERE status = 'ok' GROUP BY norm, eps ORDER BY norm, eps""",
    "lipschitz (directional)": """
        SELECT family, count(*) AS rows, round(median(l_jvp), 3) AS median_l_jvp, round(max(l_jvp), 3) AS max_l_jvp
        FROM lipschitz WHERE status = 'ok' AND h = (SELECT min(h) FROM lipschitz) GROUP BY family ORDER BY family""",
}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-run", help="run directory (default: demo-run)")
    parser.add_argument("--actors", type=int_at_least(1), help="actors on the local Ray (default: one per CPU)")
    parser.add_argument("--pairs", type=int_at_least(1), default=DEMO_PAIRS, help=f"demo pairs (default {DEMO_PAIRS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sweep.commands.run import execute
    from sweep.data.build import make_demo_shards
    from sweep.run.spec import parse_spec

    if args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    out = Path(args.out)
    data = _demo_spec()
    data["output"] = str(out)
    data["shards"] = str(out / "shards")
    shards = out / "shards"
    _check_out(out)
    if not (shards / "manifest.json").is_file():
        print(f"building {args.pairs} demo pairs in {shards} ...")
        make_demo_shards(shards, pairs=args.pairs, shard_size=SHARD_SIZE)
    else:
        existing = json.loads((shards / "manifest.json").read_text()).get("counts", {}).get("pairs_planned")
        if existing is not None and existing != args.pairs:
            raise UserError(
                f"{out} already holds a demo of {existing} pairs; resume it with --pairs {existing}, "
                f"or choose another --out for {args.pairs}"
            )
    loaded = parse_spec(data, source=str(DEMO_SPEC))
    outcome = execute(loaded, actors=args.actors, show_progress=False if args.no_progress else None,
                      allow_in_output=("shards",))
    print(outcome.describe())
    print_summary(out)
    cli = _command_name()
    print(
        f"\nexplore it:  {cli} dashboard {out}"
        f"\nquery it:    {cli} query {out} --named equivalence"
        f"\nreport it:   {cli} report {out} --out {out}/report"
    )
    return 0 if outcome.units_failed == 0 else 1


def _check_out(out: Path) -> None:
    """Before anything is written: --out is new, empty, or an earlier demo (its own shards/)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is a file, not a folder")
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir()}
    is_demo = (out / "shards" / "manifest.json").is_file()
    if "manifest.json" in names and not is_demo:
        raise UserError(f"--out {out}: holds a run that is not a demo; choose another --out")
    if "manifest.json" not in names and names - {"shards"}:
        raise UserError(f"--out {out}: holds files but is not a demo run; choose a new or empty folder")


def _command_name() -> str:
    """`vitsweep` when it is on PATH (an activated venv), else the path that reaches it (make demo)."""
    if shutil.which("vitsweep"):
        return "vitsweep"
    beside = Path(sys.executable).parent / "vitsweep"
    return os.path.relpath(beside) if beside.exists() else "vitsweep"


def _demo_spec() -> dict[str, Any]:
    if not DEMO_SPEC.is_file():
        raise UserError(f"{DEMO_SPEC}: the demo spec is missing (run the demo from a vitsweep checkout)")
    return yaml.safe_load(DEMO_SPEC.read_text())


def print_summary(run_dir: Path) -> None:
    """A few headline numbers per probe, through DuckDB over the run's Parquet files."""
    try:
        from analysis.db import open_runs

        con = open_runs([str(run_dir)])
    except ImportError:  # analysis/ not installed: plain DuckDB views over the files
        import duckdb

        con = duckdb.connect()
        for table in ("units", "match", "perturb", "lipschitz"):
            files = str(run_dir / "results" / table / "*" / "*" / "*.parquet")
            con.sql(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}', union_by_name = true)")
    for title, sql in SUMMARY_SQL.items():
        print(f"\n{title}")
        con.sql(sql).show(max_width=160)
