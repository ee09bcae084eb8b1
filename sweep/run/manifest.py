"""Provenance of a run: `spec.yaml` as run and `manifest.json` (versions, commit, devices, times).

A rerun into the same directory keeps the run id. If the new spec would produce different rows
(another model, probe setting, shard set, seed or gallery size: `LoadedSpec.result_hash`), the
rerun is refused unless `--force`; with `--force` the old spec.yaml and manifest.json are kept
under `history/` and the new spec's units are added beside the old ones (unit ids are content
hashes, so old and new units never collide). Execution settings (batch size, attempts, actors)
may change freely between reruns.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


def prepare_run(store: RunStore, loaded: LoadedSpec, *, force: bool = False) -> dict[str, Any]:
    """Check the run directory against the spec, write spec.yaml and a fresh manifest.json.
    Returns the manifest (with the run id: kept from an earlier run into the same directory)."""
    old = store.read_json(MANIFEST_FILE)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    if old is not None:
        if old.get("result_hash") != loaded.result_hash:
            if not force:
                raise UserError(
                    f"{store.root} holds a run of a different spec (other models, probe settings, shards, seed "
                    "or gallery); use another --out, or --force to add this spec's units to it"
                )
            old_spec = store.read_text(SPEC_FILE)
            if old_spec is not None:
                store.write_text(f"history/spec-{stamp}.yaml", old_spec)
            store.write_json(f"history/manifest-{stamp}.json", old)
        run_id = old["run_id"]
    else:
        run_id = f"{loaded.spec.name}-{stamp}-{uuid.uuid4().hex[:6]}"
    manifest = {
        "run_id": run_id,
        "spec_hash": loaded.spec_hash,
        "result_hash": loaded.result_hash,
        "spec_source": loaded.source,
        "versions": versions(),
        "git_commit": git_commit(),
        "devices": [],
        "cluster": {},
        "hostname": socket.gethostname(),
        "command": sys.argv,
        "first_started_at": (old or {}).get("first_started_at") or (old or {}).get("started_at") or _now(),
        "started_at": _now(),
        "finished_at": None,
        "state": "running",
    }
    store.write_text(SPEC_FILE, loaded.to_yaml())
    store.write_json(MANIFEST_FILE, manifest)
    return manifest


def finish_run(store: RunStore, manifest: dict[str, Any], state: str, **extra: Any) -> None:
    manifest.update(extra, finished_at=_now(), state=state)
    store.write_json(MANIFEST_FILE, manifest)
