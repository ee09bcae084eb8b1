"""A Ctrl-C whose KeyboardInterrupt is swallowed (as inside Ray's start-up on a busy machine, where
the run used to go on and finish with exit 0) still stops the run: the driver's handler records
the stop and the driver checks it between stages (issue 24 item 6). No Ray is started: `connect`
is replaced by one that receives the signal, swallows the interrupt and returns a cluster."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from tests.support.sweeps import LINEAR, make_shards, write_spec

from sweep.run.spec import load_spec


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread only")
def test_a_swallowed_ctrl_c_during_ray_start_still_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.run import distribute
    from sweep.run.driver import run_sweep

    def connect_swallowing_ctrl_c(address: object = None, **kwargs: object) -> distribute.ClusterInfo:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs here
                threading.Event().wait(0.01)
        except KeyboardInterrupt:
            pass  # lost, as some code on Ray's start-up path loses it
        return distribute.ClusterInfo(address="local", started_local=True, cpus=1.0, gpus=0.0, nodes=1)

    monkeypatch.setattr(distribute, "connect", connect_swallowing_ctrl_c)
    monkeypatch.setattr(distribute, "shutdown", lambda: None)
    make_shards(tmp_path / "shards", 1, 2)
    run = tmp_path / "run"
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": LINEAR, "weights": "factory"}], probes=["match"])
    loaded = load_spec(str(spec))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(loaded, actors=1, show_progress=False)
    assert not run.exists()  # stopped before the manifest: no run folder, no lease or lock left
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_lease_is_taken_before_ray_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 12: the lease used to be taken after Ray had started (a second driver was refused only
    after ~60 s of its own Ray start). Now it is held when `connect` is called."""
    from sweep.run import distribute
    from sweep.run.driver import run_sweep
    from sweep.run.lease import LEASE_FILE

    run = tmp_path / "run"
    seen: list[bool] = []

    def connect(address: object = None, **kwargs: object) -> distribute.ClusterInfo:
        seen.append((run / LEASE_FILE).is_file())
        raise KeyboardInterrupt  # stop here: the test is about the order only

    monkeypatch.setattr(distribute, "connect", connect)
    monkeypatch.setattr(distribute, "shutdown", lambda: None)
    make_shards(tmp_path / "shards", 1, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), run,
                      models=[{"name": LINEAR, "weights": "factory"}], probes=["match"])
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_spec(str(spec)), actors=1, show_progress=False)
    assert seen == [True]
    assert not run.exists()  # released, and the folder it made is gone
