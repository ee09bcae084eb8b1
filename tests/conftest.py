"""Suite-wide collection rules for running the tests on several pytest-xdist workers
(`make test PYTEST_ARGS="-n 2 --dist loadgroup"`).

Every `slow` test that starts Ray (a local cluster through `ray.init`, or `ray start` heads of its
own) goes into one xdist group, so those tests run one after another on a single worker: a
`ray start` head becomes the machine's "latest cluster", which a plain `ray.init()` in a test
running beside it would join instead of starting its own. They are collected first so that this
longest chain of work starts at once; the browser tests and the fast tests share the other
workers. Without workers (plain `pytest`, as `make test` runs by default) nothing changes.

Also the fixtures several folders share: the synthetic runs (`fixture_run`, `scale_run`, one per
test module) and `open_app`, the dashboard under Streamlit's AppTest. Fixtures one folder uses
live in that folder's conftest.py (tests/probes: `one_thread`, `tiny`; tests/e2e: `local_ray`,
`connected_ray`). Helpers that are not fixtures live in tests/support/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.runs import make_fixture_run, make_scale_run

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

TESTS = Path(__file__).resolve().parent
APP = TESTS.parent / "dashboard" / "app.py"
APP_TIMEOUT = 90  # seconds per AppTest run: the CI machine is small and shared
RAY_GROUP = "ray"
# slow tests that never start Ray (paths under tests/): they may run beside the Ray group
WITHOUT_RAY = ("/e2e/test_dashboard_browser.py",)


def _starts_ray(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None and not item.path.as_posix().endswith(WITHOUT_RAY)


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


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small run of known values (tests/support/runs.py), written once per test module."""
    return make_fixture_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The multi-model, multi-setting scale run (240 pairs, 20 per unit), once per test module."""
    return make_scale_run(tmp_path_factory.mktemp("scale"), pairs=240, pairs_per_unit=20)


@pytest.fixture
def open_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AppTest]]:
    """open_app(*runs, page="runs") -> the dashboard over those run folders, run, on that page."""
    from streamlit.testing.v1 import AppTest  # here, not at the top: only the dashboard tests pay for it

    def _open(*runs: Path, page: str = "runs") -> AppTest:
        monkeypatch.setenv("VITSWEEP_RUNS", ":".join(str(r) for r in runs))
        at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT).run()
        if page != "runs":
            at.switch_page(f"views/{page}.py").run()
        return at

    yield _open
