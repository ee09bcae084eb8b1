"""Provenance of a run: `spec.yaml` as run and `manifest.json` (versions, commit, devices, times).

A rerun into the same directory keeps the run id. If the new spec would produce different rows
(another model, probe setting, shard set, seed or gallery size: `LoadedSpec.result_hash`), the
rerun is refused unless `--force`; with `--force` the old spec.yaml and manifest.json are kept
under `history/` and the new spec's units are added beside the old ones (unit ids are content
hashes, so old and new units never collide). Execution settings (batch size, attempts, actors)
may change freely between reruns.

Every invocation appends an entry to the manifest's `invocations` list (command, spec file,
host, versions, commit, devices, cluster, times, state, what it ran); nothing an earlier
invocation recorded is replaced. At the top level, `devices` is the union over all invocations,
`cluster` the last one that started actors, and `units_done`, `units_failed`, `pairs_done`,
`pairs_error` count the whole run.

Before anything is written, `check_output` refuses an output that is a file, a folder that holds
files but is not a run (a user's spec.yaml is never overwritten), or a corrupt manifest.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from sweep.errors import UserError
from sweep.run.spec import LoadedSpec
from sweep.run.store import RunStore

SPEC_FILE = "spec.yaml"
MANIFEST_FILE = "manifest.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "timm", "ray", "pyarrow", "vitsweep"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """HEAD of the checkout this code runs from, with "-dirty" if it has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def read_manifest(store: RunStore) -> dict[str, Any] | None:
    """The run's manifest.json, None when there is none; a corrupt one is a UserError (it holds
    the run's provenance: it is never overwritten)."""
    where = store.path(MANIFEST_FILE)
    try:
        old = store.read_json(MANIFEST_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(
            f"{where}: corrupt manifest ({reason}); it holds the run's provenance, so it is left as it is: "
            "repair it or move it away, then rerun"
        ) from None
    if old is not None and not (isinstance(old, dict) and isinstance(old.get("run_id"), str)):
        raise UserError(f"{where}: not a vitsweep manifest (no run_id); repair it or move it away, then rerun")
    return old


def check_output(store: RunStore, loaded: LoadedSpec, *, force: bool = False, allow: Collection[str] = ()) -> None:
    """Everything about the output that can be known before writing or starting Ray: it is a
    folder (or not there yet) that is empty, a run of this spec (or `--force`), or holds only
    the names in `allow`; a local one can be written."""
    try:
        info = store.fs.get_file_info(store.base)
        names = (
            {f.base_name for f in store.fs.get_file_info(pafs.FileSelector(store.base, allow_not_found=True))}
            if info.type == pafs.FileType.Directory else set()
        )
    except OSError as err:  # an unreachable object store, a path through a file, ...
        raise UserError(f"{store.root}: cannot reach the output ({' '.join(str(err).split())[:300]})") from None
    if info.type == pafs.FileType.File:
        raise UserError(f"{store.root}: exists and is a file, not a run folder")
    if MANIFEST_FILE not in names and names - set(allow):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise UserError(
            f"{store.root}: holds files ({shown}) but is not a vitsweep run (no {MANIFEST_FILE}); "
            "choose a new or empty folder for the run"
        )
    if store.is_local:
        _check_writable(Path(store.base), store.root)
    _check_same_spec(store, read_manifest(store), loaded, force)


def _check_writable(folder: Path, shown: str) -> None:
    """Try what the run will do (create an entry) in the folder, or its nearest existing parent:
    permission bits, read-only mounts and root all answer the same way."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{shown}: cannot create it ({existing} is a file)")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".vitsweep-check-").cleanup()
    except OSError as err:
        raise UserError(f"{shown}: cannot write there ({existing}: {err.strerror or err})") from None


def _check_same_spec(store: RunStore, old: dict[str, Any] | None, loaded: LoadedSpec, force: bool) -> None:
    if old is not None and old.get("result_hash") != loaded.result_hash and not force:
        raise UserError(
            f"{store.root} holds a run of a different spec (other models, probe settings, shards, seed "
            "or gallery); use another --out, or --force to add this spec's units to it"
        )


def _invocation(loaded: LoadedSpec) -> dict[str, Any]:
    return {
        "command": sys.argv,
        "spec_source": loaded.source,
        "spec_hash": loaded.spec_hash,
        "hostname": socket.gethostname(),
        "versions": versions(),
        "git_commit": git_commit(),
        "started_at": _now(),
        "finished_at": None,
        "state": "running",
        "devices": [],
        "cluster": {},
    }


def _earlier_invocations(old: dict[str, Any]) -> list[dict[str, Any]]:
    """The invocations an existing manifest records (one built from its top level when it
    predates the list)."""
    if isinstance(old.get("invocations"), list):
        return list(old["invocations"])
    keys = ("command", "spec_source", "spec_hash", "hostname", "versions", "git_commit", "started_at",
            "finished_at", "state", "devices", "cluster")
    return [{k: old.get(k) for k in keys}]


def prepare_run(store: RunStore, loaded: LoadedSpec, *, force: bool = False) -> dict[str, Any]:
    """Check the run directory against the spec, write spec.yaml and manifest.json with a new
    invocation appended. Returns the manifest (with the run id: kept from an earlier run into
    the same directory)."""
    old = read_manifest(store)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    if old is not None:
        _check_same_spec(store, old, loaded, force)
        if old.get("result_hash") != loaded.result_hash:
            old_spec = store.read_text(SPEC_FILE)
            if old_spec is not None:
                store.write_text(f"history/spec-{stamp}.yaml", old_spec)
            store.write_json(f"history/manifest-{stamp}.json", old)
        run_id = old["run_id"]
    else:
        run_id = f"{loaded.spec.name}-{stamp}-{uuid.uuid4().hex[:6]}"
    invocation = _invocation(loaded)
    invocations = [*(_earlier_invocations(old) if old else []), invocation]
    manifest = {
        **(old or {}),
        "run_id": run_id,
        "spec_hash": loaded.spec_hash,
        "result_hash": loaded.result_hash,
        # the latest invocation's provenance at the top level; every one of them in `invocations`
        **{k: invocation[k] for k in ("spec_source", "versions", "git_commit", "hostname", "command")},
        "devices": (old or {}).get("devices") or [],
        "cluster": (old or {}).get("cluster") or {},
        "first_started_at": (old or {}).get("first_started_at") or (old or {}).get("started_at") or _now(),
        "started_at": invocation["started_at"],
        "finished_at": None,
        "state": "running",
        "invocations": invocations,
    }
    store.write_text(SPEC_FILE, loaded.to_yaml())
    store.write_json(MANIFEST_FILE, manifest)
    return manifest


def finish_run(
    store: RunStore,
    manifest: dict[str, Any],
    state: str,
    *,
    devices: list[str] | None = None,
    cluster: dict[str, Any] | None = None,
    totals: dict[str, int] | None = None,
    this_invocation: dict[str, Any] | None = None,
) -> None:
    """Record how this invocation ended (its own entry, the run's state and totals)."""
    now = _now()
    current = manifest["invocations"][-1]
    current.update(this_invocation or {}, finished_at=now, state=state, devices=devices or [], cluster=cluster or {})
    manifest.update(totals or {}, finished_at=now, state=state)
    manifest["devices"] = sorted({*manifest.get("devices", []), *(devices or [])})
    if cluster:
        manifest["cluster"] = cluster
    store.write_json(MANIFEST_FILE, manifest)
