"""Suite-wide collection rules for running the tests on several pytest-xdist workers
(`make test PYTEST_ARGS="-n 2 --dist loadgroup"`).

Every `slow` test that starts Ray (a local cluster through `ray.init`, or `ray start` heads of its
own) goes into one xdist group, so those tests run one after another on a single worker: a
`ray start` head becomes the machine's "latest cluster", which a plain `ray.init()` in a test
running beside it would join instead of starting its own. They are collected first so that this
longest chain of work starts at once; the browser tests and the fast tests share the other
workers. Without workers (plain `pytest`, as `make test` runs by default) nothing changes.
"""

from __future__ import annotations

import pytest

RAY_GROUP = "ray"
# slow tests that never start Ray: they may run beside the Ray group
WITHOUT_RAY = ("test_dashboard_browser.py",)


def _starts_ray(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None and item.path.name not in WITHOUT_RAY


def _on_workers(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("numprocesses"))
    except ValueError:  # pytest-xdist is not installed
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _on_workers(config):
        return
    ray = [item for item in items if _starts_ray(item)]
    rest = [item for item in items if not _starts_ray(item)]
    for item in ray:
        item.add_marker(pytest.mark.xdist_group(RAY_GROUP))
    items[:] = ray + sorted(rest, key=lambda item: item.get_closest_marker("slow") is None)
