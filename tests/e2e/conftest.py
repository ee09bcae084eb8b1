"""Fixtures of the end-to-end tests: a local Ray in this process with a private temp dir.

Token authentication is off here: Ray reads the mode once per process, and an earlier test may
have imported Ray already (the subprocess tests run with tokens)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.sweeps import kill_ray_processes, ray_env

RAY_KEYS = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")


@contextmanager
def _private_ray(mp: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment for a Ray of our own; afterwards Ray is shut down, its processes killed
    and its temp dir removed."""
    env = ray_env()
    env["RAY_AUTH_MODE"] = "disabled"
    for key in RAY_KEYS:
        mp.setenv(key, env[key])
    try:
        yield env
    finally:
        from sweep.run import distribute

        distribute.shutdown()
        kill_ray_processes(env["RAY_TMPDIR"])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture()
def local_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Ray started by the code under test (one test), in this process; yields its environment."""
    with _private_ray(monkeypatch) as env:
        yield env


@pytest.fixture(scope="module")
def connected_ray() -> Iterator[dict[str, str]]:
    """One local Ray (2 CPUs, no GPU) for the module, connected here before the first test."""
    from sweep.run import distribute

    with pytest.MonkeyPatch.context() as mp, _private_ray(mp) as env:
        info = distribute.connect(num_cpus=2, num_gpus=0)
        assert info.started_local and info.gpus == 0
        yield env


def _spin(deadline: float) -> None:
    """A busy loop until `deadline` (time.monotonic()): one core's worth of load."""
    import time

    x = 0
    while time.monotonic() < deadline:
        for _ in range(100_000):
            x += 1


@pytest.fixture()
def busy_cores() -> Iterator[int]:
    """Every core kept busy by a worker process for the test's duration (as when other work loads
    the machine: the case where a Ctrl-C used to be lost). The workers stop by themselves after
    20 minutes at the latest and are killed at teardown. Yields how many were started."""
    import multiprocessing
    import os
    import time

    n = os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")  # no copy of this process's threads or Ray state
    workers = [ctx.Process(target=_spin, args=(time.monotonic() + 1200,), daemon=True) for _ in range(n)]
    for worker in workers:
        worker.start()
    try:
        yield n
    finally:
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.join(timeout=10)
