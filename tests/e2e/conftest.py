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
