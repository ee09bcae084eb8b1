"""The `vitsweep` command: parses the subcommand and hands over to sweep/commands/<name>.py.

Each subcommand module defines `register(subparsers)` and `run(args) -> int`; it is imported only
when chosen, so `vitsweep query` never pays for importing torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sweep.errors import UserError

COMMANDS: dict[str, str] = {
    "demo": "Build the demo shards, run a small sweep of all three probes, summarise it.",
    "init": "Write the example sweep specs (demo, imagenet-val) into a folder for you to edit.",
    "shards": "Make and check WebDataset shards of image pairs.",
    "plan": "Count a sweep spec's work (units, pairs, passes) and estimate its time and GPU-hours.",
    "run": "Run a sweep spec on a local or remote Ray cluster.",
    "labels": "Recompute a run's k-NN labels against the whole run's images (or a reference set).",
    "probe": "Run one probe on one image pair.",
    "replay": "Re-run one pair of a run and compare it with the stored rows.",
    "query": "Query a run's results with SQL or a named query.",
    "report": "Write the findings report (HTML and Markdown) of one or more runs.",
    "dashboard": "Browse a run in the Streamlit dashboard.",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitsweep",
        description="Measure the equivalence structure of ViT embedding spaces at dataset scale.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        if name == chosen:
            module = importlib.import_module(f"sweep.commands.{name}")
            module.register(subparsers.add_parser(name, help=help_text, description=help_text))
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    module = importlib.import_module(f"sweep.commands.{args.command}")
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"vitsweep {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # e.g. `vitsweep ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"vitsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
