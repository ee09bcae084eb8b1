"""Helpers for the sweep tests: tiny WebDataset pair shards, specs, reading results back, and
an environment for Ray processes that leaks nothing (own temp dir, own auth token)."""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
LINEAR = "tests.support.encoders:linear_encoder"
SLOW = "tests.support.encoders:slow_linear_encoder"
# match settings no pair can meet: every pair runs all 40 steps (units last long enough to interrupt)
SLOW_MATCH = [{"name": "match", "params": {"max_steps": 40, "log_every": 10, "min_cos": 1.0, "rho": 1e-9}}]

# Probe settings small enough for a linear 8x8 encoder on a shared 2-core machine.
FAST_PROBES: list[dict[str, Any]] = [
    {"name": "match", "params": {"max_steps": 20, "log_every": 5}},
    {"name": "perturb", "params": {"eps": [0.01, 0.03], "steps": 3, "random_draws": 2}},
    {"name": "lipschitz", "params": {"families": ["random", "top"], "h": [0.1, 1.0], "n_random": 2, "top_k": 2, "iters": 3}},
]
ROWS_PER_PAIR = {"match": 1, "perturb": 2, "lipschitz": (2 + 2) * 2}  # for FAST_PROBES


def _png(rng: np.random.Generator, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path: Path, n_pairs: int, *, start: int = 0, seed: int = 0, size: int = 8,
                corrupt: set[int] = frozenset(), n_labels: int = 3) -> Path:
    """A tar of `n_pairs` pairs named `pair-<i>`; pairs whose index is in `corrupt` get an
    undecodable source image."""
    rng = np.random.default_rng(seed + start)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n_pairs):
            key = f"pair-{i:06d}"
            meta = {"pair_id": key, "src_key": f"img-{2 * i}", "tgt_key": f"img-{2 * i + 1}",
                    "src_label": int(i % n_labels), "tgt_label": int((i + 1) % n_labels)}
            members = {
                f"{key}.src.png": b"this is not a png" if i in corrupt else _png(rng, size),
                f"{key}.tgt.png": _png(rng, size),
                f"{key}.json": json.dumps(meta).encode(),
            }
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path, n_shards: int, pairs_per_shard: int, *, corrupt: set[int] = frozenset(),
                size: int = 8) -> list[Path]:
    """Shards `shard-000000.tar`, … with globally numbered pairs (corrupt = global pair indices)."""
    return [
        write_shard(folder / f"shard-{s:06d}.tar", pairs_per_shard, start=s * pairs_per_shard,
                    corrupt=set(corrupt), size=size)
        for s in range(n_shards)
    ]


def write_spec(path: Path, shards: str | list[str], output: Path | None = None, *, models: Any = None,
               probes: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "test",
        "models": models or [{"name": LINEAR, "weights": "factory"}],
        "probes": probes if probes is not None else FAST_PROBES,
        "shards": shards,
        "batch_size": 8,
        "seed": 0,
        **extra,
    }
    if output is not None:
        spec["output"] = str(output)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_table(run_dir: Path | str, table: str) -> pa.Table:
    """All rows of one result table (only complete `*.parquet` files, as any reader sees them)."""
    folder = Path(run_dir) / "results" / table
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    if not files:
        return pa.table({})
    return ds.dataset(files, format="parquet").to_table()


def ray_env() -> dict[str, str]:
    """Environment for processes that run Ray: a private temp dir (short: Ray's socket paths
    must stay under 108 bytes) that is also HOME, a private auth token, and the repo importable
    (for the test encoders)."""
    ray_tmp = Path("/tmp") / f"vsr-{secrets.token_hex(3)}"
    ray_tmp.mkdir()
    env = dict(os.environ)
    env.update(
        HOME=str(ray_tmp),  # whatever Ray writes under ~ (~/.ray/auth_token, say) stays private
        RAY_TMPDIR=str(ray_tmp),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(16),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def ray_pids(ray_tmp: str) -> list[int]:
    """Pids of the processes this test's Ray started: their environment names its RAY_TMPDIR, or,
    for processes whose title rewrite blanked their environment (Ray's agents), an open file
    lies under it."""
    marker = f"RAY_TMPDIR={ray_tmp}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") or any(
                os.readlink(fd).startswith(ray_tmp + "/") for fd in (entry / "fd").iterdir()
            ):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def kill_ray_processes(ray_tmp: str, timeout_s: float = 10.0) -> int:
    """End, by pid, the processes this test's Ray started; returns how many were alive."""
    import signal
    import time

    pids = ray_pids(ray_tmp)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids):
        time.sleep(0.1)
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def units_mtimes(run_dir: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (Path(run_dir) / "results" / "units").rglob("*.parquet")}


def assert_no_duplicates(run_dir: Path) -> None:
    """Each (unit, pair, row key) appears once in every table."""
    keys = {
        "match": ("unit_id", "pair_id"),
        "perturb": ("unit_id", "pair_id", "eps"),
        "lipschitz": ("unit_id", "pair_id", "family", "direction", "h"),
        "pairs": ("unit_id", "pair_id"),
        "images": ("unit_id", "pair_id"),
        "units": ("unit_id",),
        "embeddings": ("unit_id", "pair_id", "role", "eps"),
        "labels": ("run_id", "unit_id", "pair_id", "eps"),
    }
    for table, columns in keys.items():
        rows = read_table(run_dir, table).to_pylist()
        seen = [tuple(r[c] for c in columns) for r in rows]
        assert len(seen) == len(set(seen)), f"duplicate rows in {table}"
