"""`vitsweep demo`: build the demo shards, run the packaged demo spec on a local Ray, summarise it.

    vitsweep demo                      # -> demo-run/ (shards, results), a summary table
    vitsweep demo --out /tmp/demo --actors 2
    vitsweep demo --weights pretrained # trained ViT-Tiny, the paper's matching settings -> demo-run-pretrained/

All three probes on a seeded random-init ViT-Tiny (`vit_tiny_patch16_224`, weights `random:0`):
no download, sized for a laptop's CPU. A second `vitsweep demo` into the same folder
finds everything done and only prints the summary. The spec is package data
(sweep/examples/demo.yaml), so an installed vitsweep runs its demo without a checkout.

`--weights pretrained` runs the same sweep on the trained `vit_tiny_patch16_224.augreg_in21k_ft_in1k`
(timm's weights, downloaded once) with `match` set to the paper preset: the authors' lr 0.08,
tau 1e-4 on ||f(x) - f(t)||^2 and min_cos 0.97, plain gradient descent in the normalised input
space, fp32; only max_steps is capped (PRETRAINED_MAX_STEPS instead of the authors' 12,000) so the
demo stays within minutes on a CPU: a pair not matched by then counts as not successful. The
weights are loaded before Ray starts, so without network (and without a cached copy) it fails in
seconds with one line.
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

DEMO_SPEC = "demo.yaml"  # package data: sweep/examples/demo.yaml
PRETRAINED_MODEL = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
# The paper preset fills in lr 0.08, tau 1e-4, min_cos 0.97, gd, fp32; the step cap is the demo's.
PRETRAINED_MATCH = {"preset": "paper", "max_steps": 300, "log_every": 5}
PRETRAINED_MAX_STEPS = PRETRAINED_MATCH["max_steps"]
DEMO_PAIRS = 8
SHARD_SIZE = 4  # two shards: six units to spread over the actors

SUMMARY_SQL = {
    "model and weights": """
        SELECT model, weights, embed, count(*) AS units FROM units GROUP BY ALL ORDER BY ALL""",
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
    parser.add_argument("--out", help="run directory (default: demo-run; demo-run-pretrained with --weights pretrained)")
    parser.add_argument(
        "--weights", default="random:0",
        help="random:<seed> (default random:0: no download) or pretrained (the trained "
        f"{PRETRAINED_MODEL} with the paper's match preset; needs network once) or file:<path>",
    )
    parser.add_argument("--actors", type=int_at_least(1), help="actors on the local Ray (default: one per CPU)")
    parser.add_argument("--pairs", type=int_at_least(1), default=DEMO_PAIRS, help=f"demo pairs (default {DEMO_PAIRS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sweep.commands.run import execute
    from sweep.data.build import make_demo_shards
    from sweep.run.spec import parse_spec

    if args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    out = Path(args.out or ("demo-run" if args.weights == "random:0" else f"demo-run-{_slug(args.weights)}"))
    data = _with_weights(_demo_spec(), args.weights)
    if args.weights == "pretrained":
        _check_weights_reachable(data["models"][0])
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
    loaded = parse_spec(data, source=f"the packaged {DEMO_SPEC}")
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
    from sweep.examples import example_spec

    try:
        return example_spec(DEMO_SPEC)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"the packaged {DEMO_SPEC} cannot be read ({err}): reinstall vitsweep") from None


def _with_weights(data: dict[str, Any], weights: str) -> dict[str, Any]:
    """The demo spec for `weights`; `pretrained` means the trained ViT-Tiny and the paper's match preset."""
    from pydantic import ValidationError

    from sweep.run.spec import ModelSpec

    model = dict(data["models"][0])
    try:
        ModelSpec(name=model["name"], weights=weights)
    except ValidationError as err:
        raise UserError(f"--weights: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    model["weights"] = weights
    if weights == "pretrained":
        model["name"] = PRETRAINED_MODEL
        data["probes"] = [
            {"name": "match", "params": dict(PRETRAINED_MATCH)} if p["name"] == "match" else p for p in data["probes"]
        ]
    data["models"] = [model]
    return data


def _check_weights_reachable(model: dict[str, Any]) -> None:
    """Load the pretrained weights in the driver before Ray starts (into timm's cache, where the
    actors find them): offline this fails in seconds with encoders.py's one-line message."""
    from sweep.encoders import load_encoder

    print(f"loading pretrained weights for {model['name']} ...")
    load_encoder(model["name"], model["weights"], model.get("embed", "pre_logits"), device="cpu")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text).strip("-.") or "weights"


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
