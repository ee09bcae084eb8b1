"""`vitsweep labels RUN`: (re)compute the k-NN labels of a run after its units have finished.

    vitsweep labels runs/demo                                  # k and bank from the run's spec.yaml
    vitsweep labels runs/demo --k 10                           # another k
    vitsweep labels runs/demo --bank shards/imagenet-train-50  # a reference shard set as the bank

`vitsweep run` does this itself when its units finish; this command redoes it (another k or
bank, or a run whose pass was interrupted). The labels replace the run's earlier ones. A
reference bank is embedded once per model setting on this machine (a GPU when there is one) and
kept in the run. It takes the run directory's lease (sweep/run/lease.py) as `vitsweep run` does:
while a driver holds the run it is refused. Exit status 2 for a path that is not a run, a bad
bank, or a run another driver holds.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sweep.errors import UserError

if TYPE_CHECKING:
    from sweep.run.lease import Lease


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run directory or URI (s3://bucket/prefix)")
    parser.add_argument("--k", type=int, help="voters per label (default: the spec's knn_k, else 5)")
    parser.add_argument("--bank", metavar="SHARDS",
                        help="reference shard set (folder, glob, brace pattern, s3://...) to label against "
                        "instead of the run's own images (default: the spec's knn_bank)")
    parser.add_argument("--device", default=None, help="torch device for embedding and search (default: cuda if any)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if "://" not in args.run:
        path = Path(args.run)
        if not path.is_dir():
            raise UserError(f"run directory not found: {args.run}")
        if not (path / "results").is_dir():
            raise UserError(f"not a vitsweep run (no results/): {args.run}")
    if args.k is not None and args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    device = _device(args.device)
    from sweep.finished.labels import label_run
    from sweep.run.store import RunStore

    store = RunStore(args.run)
    store.check_bucket()  # a missing bucket is said as such, not as the lease file it cannot read
    with holding(store, "labels"):  # not while a driver runs (its own labels pass would replace ours)
        summary = label_run(store, k=args.k, bank=args.bank, device=device)
    print(summary.describe())
    return 0


def _device(text: str | None) -> object:
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"--device: not a torch device: {text!r} (use cpu, cuda or cuda:<index>)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {text}: no such CUDA device on this machine")
    return device


@contextmanager
def holding(store: Any, command: str) -> Iterator[Lease]:
    """The run directory's lease for a command that changes a finished run (`vitsweep labels`):
    LeaseHeld (exit 2) while a driver holds it; a dead holder's lease is taken over (said on
    stderr); losing it stops the command as Ctrl-C does; released at the end."""
    import _thread
    import sys
    import threading

    from sweep.run.lease import Lease, takeover_note

    lease = Lease.acquire(store)
    if lease.took_over:
        print(f"vitsweep {command}: {takeover_note(lease.took_over)}", file=sys.stderr)
    main_thread = threading.current_thread() is threading.main_thread()

    def lost(message: str) -> None:
        print(f"vitsweep {command}: {message}; stopping", file=sys.stderr)
        if main_thread:
            _thread.interrupt_main()

    lease.start_heartbeat(on_lost=lost)
    try:
        yield lease
    finally:
        lease.release()
