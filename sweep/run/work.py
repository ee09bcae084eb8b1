"""Stage 1 of a run (sweep/run/driver.py): find the work. The output is a new or empty folder, a
run of this spec, or holds only the spec's own shards; the units already done come from the
`units` table; more than CONFIRM_UNITS units to run need --yes; the shards of the units to run
open as pair shards. Nothing is written and Ray is not started.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pyarrow.fs as pafs

from sweep.errors import UserError
from sweep.run.lease import LEASE_FILE, LEASE_LOCK
from sweep.run.manifest import check_output
from sweep.run.spec import LoadedSpec, WorkUnit
from sweep.run.store import RunStore

CONFIRM_UNITS = 1000  # a sweep with more units to run than this needs yes=True (--yes)


@dataclass
class Work:
    """The units of a spec split into those to run and those an earlier invocation finished."""

    todo: list[WorkUnit]
    done: list[WorkUnit]
    pairs_ok_done: int = 0  # ok pairs of the done units
    pairs_error_done: int = 0


def output_store(loaded: LoadedSpec, actors: int | None) -> RunStore:
    if not loaded.spec.output:
        raise UserError(f"{loaded.source}: no output directory: set `output` in the spec or pass --out")
    if actors is not None and actors < 1:
        raise UserError(f"--actors must be at least 1, got {actors}")
    return RunStore(loaded.spec.output)


def find_work(store: RunStore, loaded: LoadedSpec, *, force: bool, allow: tuple[str, ...], yes: bool) -> Work:
    """Check the output and the shard set (nothing written) and split the units into to-do and done."""
    # a lease.json alone is a driver that died before writing its manifest: taken over later;
    # the spec's own shards may live in the output (the README's demo-run/shards)
    check_output(store, loaded, force=force, allow=(*allow, *shards_inside(store, loaded.shards), LEASE_FILE, LEASE_LOCK))
    status, ok_pairs, error_pairs = unit_counts(store)
    todo = [u for u in loaded.units if status.get(u.unit_id) != "ok"]
    if len(todo) > CONFIRM_UNITS and not yes:
        raise UserError(
            f"{len(todo)} units to run ({len(loaded.units)} in the spec); check the grid, then rerun with --yes"
        )
    if todo:
        check_shard_set(sorted({u.shard for u in todo}))
    done = [u for u in loaded.units if status.get(u.unit_id) == "ok"]
    return Work(todo, done, sum(ok_pairs.get(u.unit_id, 0) for u in done),
                sum(error_pairs.get(u.unit_id, 0) for u in done))


def shards_inside(store: RunStore, shards: list[str]) -> set[str]:
    """The names in the output folder that hold some of the spec's shards (`vitsweep shards make
    --out demo-run/shards` and a spec with `output: demo-run`)."""
    root = store.root.rstrip("/")
    if store.is_local:
        root = os.path.abspath(store.base)
        shards = [os.path.abspath(s) for s in shards if "://" not in s]
    return {s[len(root) + 1:].split("/", 1)[0] for s in shards if s.startswith(root + "/")}


def unit_counts(store: RunStore) -> tuple[dict[str, str], dict[str, int], dict[str, int]]:
    """(status, ok pairs, error pairs) per unit id from the `units` table. An unreadable units
    file (a disk error, a hand-edited file) is reported, moved aside as `<name>.corrupt` (readers
    glob `*.parquet`) and its unit run again."""

    def move_aside(path: str, err: Exception) -> None:
        reason = " ".join(str(err).split())[:200]
        print(f"warning: {path}: unreadable units file ({reason}); moved to {path}.corrupt, "
              "its unit will be run again", file=sys.stderr)
        if store.fs.get_file_info(path).type == pafs.FileType.File:
            store.fs.move(path, path + ".corrupt")

    rows = store.read("units", columns=["unit_id", "status", "n_pairs", "n_error"], on_bad_file=move_aside).to_pylist()
    status = {r["unit_id"]: r["status"] for r in rows}
    ok_pairs = {r["unit_id"]: int(r["n_pairs"] or 0) - int(r["n_error"] or 0) for r in rows}
    error_pairs = {r["unit_id"]: int(r["n_error"] or 0) for r in rows}
    return status, ok_pairs, error_pairs


def check_shard_set(shards: list[str]) -> None:
    """Every shard opens as a tar and its first sample is a pair (json + src + tgt image), as
    `vitsweep shards check` would find; a full decode is left to the sweep (a bad image becomes
    an error row). Read in parallel: for remote shards this is one short read each."""
    from concurrent.futures import ThreadPoolExecutor

    from sweep.data.shards import iter_samples

    def first_problem(url: str) -> str | None:
        sample = next(iter(iter_samples(url)), None)
        if sample is None:
            return f"{url}: holds no samples"
        if sample.get("__key__") is None and "__error__" in sample:
            return f"{sample['__error__']}"
        fields = {k.split(".", 1)[0] for k in sample if not k.startswith("__")}
        missing = [f for f in ("json", "src", "tgt") if f not in fields]
        if missing:
            found = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"
            return f"{url}: not a pair shard (its first sample {sample['__key__']!r} has {found}, no {'/'.join(missing)})"
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(shards))) as pool:
        problems = [p for p in pool.map(first_problem, shards) if p]
    if problems:
        more = f" (and {len(problems) - 1} more bad shard(s))" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; `vitsweep shards check` describes a shard set")
