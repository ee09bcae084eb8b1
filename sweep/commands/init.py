"""`vitsweep init [DIR]`: write the packaged example specs into DIR for a user to edit.

    vitsweep init              # ./demo.yaml and ./imagenet-val.yaml
    vitsweep init specs        # specs/demo.yaml, specs/imagenet-val.yaml (the folder is created)

Never overwrites: when any of the files already exists, nothing is written (one line, exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sweep.errors import UserError
from sweep.examples import EXAMPLES, example_text


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="folder to write the specs into (default: .)")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    targets = [folder / name for name in EXAMPLES]
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing:
        raise UserError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                        "nothing written (move it away or choose another folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target in targets:
            with open(target, "x", encoding="utf-8") as f:  # "x": never replace a file that appeared meanwhile
                f.write(example_text(target.name))
    except OSError as err:
        raise UserError(f"{folder}: cannot write the specs ({err.strerror or err})") from None
    shown = [os.path.relpath(t) if not folder.is_absolute() else str(t) for t in targets]
    print(f"wrote {' and '.join(shown)}")
    make = _shards_command(example_text(targets[0].name))
    first = f"make its shards: `{make}`; then " if make else "make its shards (its header says how); then "
    print(f"next: edit them; for {shown[0]}, {first}`vitsweep plan {shown[0]}` counts the work and "
          f"`vitsweep run {shown[0]}` runs it")
    return 0


def _shards_command(text: str) -> str | None:
    """The `vitsweep shards make ...` line of a spec's header, if it has one."""
    for line in text.splitlines():
        command = line.lstrip("# ").strip()
        if line.startswith("#") and command.startswith("vitsweep shards make"):
            return command
    return None
