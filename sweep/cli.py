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
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
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
    try:
        return _main(argv)
    except KeyboardInterrupt:  # a Ctrl-C before the command started (while its modules import)
        name = next((a for a in argv if not a.startswith("-")), None)
        print(f"vitsweep{' ' + name if name in COMMANDS else ''}: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    parser, chosen = build_parser(argv)
    if not argv:
        parser.print_help()
        return 0
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported with the subcommand's usage, not the top level's
        (chosen or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(f"sweep.commands.{args.command}")
    interrupted = "vitsweep {}: {}".format(args.command, getattr(module, "INTERRUPTED", "interrupted"))
    with _ctrl_c() as ctrl_c:
        args.ctrl_c = ctrl_c
        try:
            return int(module.run(args) or 0)
        except BrokenPipeError:  # e.g. `vitsweep ... | head`: the reader left, nothing to report
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            return 130
        except Exception as err:  # known failures become one line, bugs keep their traceback
            if ctrl_c.pressed.is_set():  # a library that turned Ctrl-C into its own error (DuckDB: "Query interrupted")
                print(interrupted, file=sys.stderr)
                return 130
            user = as_user_error(err)
            if user is None:
                raise
            print(f"vitsweep {args.command}: error: {user}", file=sys.stderr)
            return user.exit_code


WATCH_POLL_S = 0.5  # how often the Ctrl-C watcher looks at whether the command has ended


class CtrlC:
    """Ctrl-C (SIGINT) while a command runs. The signal still raises KeyboardInterrupt as by
    default; besides, `pressed` is set and every hook is called (from a watcher thread, every half
    second until the command ends) even while the main thread is inside C code that does not
    look at signals (a DuckDB query). A command adds hooks through `args.ctrl_c` (query: the
    cursor's interrupt(), as its --timeout does)."""

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self.hooks: list[Callable[[], object]] = []
        self._done = threading.Event()

    def _call_hooks(self) -> None:
        while not self._done.is_set():
            for hook in list(self.hooks):
                try:
                    hook()
                except Exception:  # a hook of something already closed
                    pass
            self._done.wait(0.5)

    def _watch(self, sock: socket.socket) -> None:
        """Reads the signal numbers Python writes to its wakeup fd (see signal.set_wakeup_fd)."""
        while not self._done.is_set():
            if not select.select([sock], [], [], WATCH_POLL_S)[0]:
                continue
            try:
                data = sock.recv(64)
            except OSError:
                return
            if signal.SIGINT in data:
                self.pressed.set()
                self._call_hooks()
                return


@contextlib.contextmanager
def _ctrl_c() -> Iterator[CtrlC]:
    """A CtrlC for the command, where this is the main thread and SIGINT has its default handler
    (else a host program's handler, SIG_IGN or another wakeup fd are left as they are)."""
    ctrl_c = CtrlC()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield ctrl_c
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        ctrl_c.pressed.set()
        raise KeyboardInterrupt

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    if previous_fd != -1:  # someone else's wakeup fd: theirs
        signal.set_wakeup_fd(previous_fd)
        reader.close(), writer.close()
        yield ctrl_c
        return
    watcher = threading.Thread(target=ctrl_c._watch, args=(reader,), name="vitsweep-ctrl-c", daemon=True)
    signal.signal(signal.SIGINT, on_sigint)
    watcher.start()
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        ctrl_c._done.set()
        with contextlib.suppress(OSError):  # wake the watcher's select now, not at its next half second
            writer.send(b"\0")
        watcher.join(timeout=2)
        reader.close(), writer.close()

if __name__ == "__main__":
    sys.exit(main())
