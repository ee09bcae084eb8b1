"""The `vitsweep` command: parses the subcommand and hands over to sweep/commands/<name>.py.

Each subcommand module defines `register(subparsers)` and `run(args) -> int`; it is imported only
when chosen, so `vitsweep query` never pays for importing torch or Ray. The module's docstring
(its examples) becomes the end of its `--help`. Every known failure a command lets through is
turned into one line and an exit status here (sweep.errors.as_user_error), so a new command
inherits the same behaviour; a module may set `INTERRUPTED` to say more than "interrupted".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from sweep.errors import as_user_error

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


def _details(module: object) -> str:
    """The module docstring without its first line: the command's examples and notes."""
    doc = (getattr(module, "__doc__", None) or "").strip("\n")
    return doc.split("\n", 1)[1].strip("\n") if "\n" in doc else ""


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The top-level parser, and the chosen subcommand's parser (None when none was named)."""
    parser = argparse.ArgumentParser(
        prog="vitsweep",
        description="Measure the equivalence structure of ViT embedding spaces at dataset scale.",
        epilog="Run `vitsweep COMMAND --help` for a command's options and examples.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen_name = next((a for a in argv if not a.startswith("-")), None)
    chosen = None
    for name, help_text in COMMANDS.items():
        if name == chosen_name:
            module = importlib.import_module(f"sweep.commands.{name}")
            chosen = subparsers.add_parser(
                name, help=help_text, description=f"{help_text}\n\n{_details(module)}".strip(),
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            module.register(chosen)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser, chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, chosen = build_parser(argv)
    if not argv:
        parser.print_help()
        return 0
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported with the subcommand's usage, not the top level's
        (chosen or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(f"sweep.commands.{args.command}")
    interrupted = "vitsweep {}: {}".format(args.command, getattr(module, "INTERRUPTED", "interrupted"))
    with _ctrl_c() as pressed:
        try:
            return int(module.run(args) or 0)
        except BrokenPipeError:  # e.g. `vitsweep ... | head`: the reader left, nothing to report
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            return 130
        except Exception as err:  # known failures become one line, bugs keep their traceback
            if pressed:  # a library that turned Ctrl-C into its own error (DuckDB: "Query interrupted")
                print(interrupted, file=sys.stderr)
                return 130
            user = as_user_error(err)
            if user is None:
                raise
            print(f"vitsweep {args.command}: error: {user}", file=sys.stderr)
            return user.exit_code


@contextlib.contextmanager
def _ctrl_c() -> Iterator[list[int]]:
    """Records each Ctrl-C (SIGINT) while a command runs, in the list it yields; the signal still
    raises KeyboardInterrupt as by default. So a Ctrl-C that a library reports as an error of its
    own is still "interrupted", exit 130. A command may install its own handler meanwhile (the
    run driver does)."""
    pressed: list[int] = []
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield pressed  # not ours to change (a host program's handler, SIG_IGN)
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
