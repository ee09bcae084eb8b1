"""`vitsweep demo`: build the demo shards, run the packaged demo spec on a local Ray, summarise it.

    vitsweep demo                      # -> demo-run/ (shards, results), a summary table
    vitsweep demo --out /tmp/demo --actors 2
    vitsweep demo --weights pretrained # trained ViT-Tiny, the paper's matching settings -> demo-run-pretrained/

All three probes on a seeded random-init ViT-Tiny (`vit_tiny_patch16_224`, weights `random:0`):
no download, sized for a laptop's CPU. A second `vitsweep demo` into the same folder
finds everything done and only prints the summary. The spec is package data
(sweep/examples/demo.yaml, read by sweep/run/spec.py), so an installed vitsweep runs its demo
without a checkout.

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

from sweep.errors import UserError, int_at_least
from sweep.run.spec import DEMO_SPEC, PRETRAINED_MODEL, demo_spec_data, with_weights

DEMO_PAIRS = 8
SHARD_SIZE = 4  # two shards: six units to spread over the actors

# The summary's tables: title -> statement analysis/queries/demo/<name>.sql, in print order.
SUMMARY = (("model and weights", "models"), ("units", "units"), ("match (equivalence)", "match"),
           ("perturb (normal space)", "perturb"), ("lipschitz (directional)", "lipschitz"))


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
    from sweep.run.driver import run_sweep
    from sweep.run.spec import parse_spec

    if args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    out = Path(args.out or ("demo-run" if args.weights == "random:0" else f"demo-run-{_slug(args.weights)}"))
    data = with_weights(demo_spec_data(), args.weights)
    if args.weights == "pretrained":
        _check_weights_reachable(data["models"][0])
    data.update(output=str(out), shards=str(_demo_shards(out, args.pairs)))
    outcome = run_sweep(parse_spec(data, source=f"the packaged {DEMO_SPEC}"), actors=args.actors,
                        show_progress=False if args.no_progress else None, allow_in_output=("shards",))
    print(outcome.describe())
    print_summary(out)
    cli = _command_name()
    print(f"\nexplore it:  {cli} dashboard {out}\nquery it:    {cli} query {out} --named equivalence"
          f"\nreport it:   {cli} report {out} --out {out}/report")
    return 0 if outcome.units_failed == 0 else 1


def _demo_shards(out: Path, pairs: int) -> Path:
    """out/shards, built unless an earlier demo of as many pairs left them. Before anything is
    written, --out must be new, empty, or an earlier demo (its own shards/)."""
    from sweep.data.build import make_demo_shards

    shards = out / "shards"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is a file, not a folder")
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    is_demo = (shards / "manifest.json").is_file()
    if "manifest.json" in names and not is_demo:
        raise UserError(f"--out {out}: holds a run that is not a demo; choose another --out")
    if "manifest.json" not in names and names - {"shards"}:
        raise UserError(f"--out {out}: holds files but is not a demo run; choose a new or empty folder")
    if not is_demo:
        print(f"building {pairs} demo pairs in {shards} ...")
        make_demo_shards(shards, pairs=pairs, shard_size=SHARD_SIZE)
        return shards
    existing = json.loads((shards / "manifest.json").read_text()).get("counts", {}).get("pairs_planned")
    if existing is not None and existing != pairs:
        raise UserError(f"{out} already holds a demo of {existing} pairs; resume it with --pairs {existing}, "
                        f"or choose another --out for {pairs}")
    return shards


def _command_name() -> str:
    """`vitsweep` when it is on PATH (an activated venv), else the path that reaches it (make demo)."""
    if shutil.which("vitsweep"):
        return "vitsweep"
    beside = Path(sys.executable).parent / "vitsweep"
    return os.path.relpath(beside) if beside.exists() else "vitsweep"


def _check_weights_reachable(model: dict[str, Any]) -> None:
    """Load the pretrained weights in the driver before Ray starts (into timm's cache, where the
    actors find them): offline this fails in seconds with encoders.py's one-line message."""
    from sweep.encoders import load_encoder

    print(f"loading pretrained weights for {model['name']} ...")
    load_encoder(model["name"], model["weights"], model.get("embed", "pre_logits"), device="cpu")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text).strip("-.") or "weights"


def print_summary(run_dir: Path) -> None:
    """A few headline numbers per probe, through DuckDB over the run's Parquet files (the
    statements: analysis/queries/demo/)."""
    from analysis.db import open_runs
    from analysis.named import statement

    con = open_runs([str(run_dir)])
    for title, name in SUMMARY:
        print(f"\n{title}")
        con.sql(statement(f"demo/{name}")).show(max_width=160)
