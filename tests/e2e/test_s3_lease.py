"""The run lease as an S3 object on a real S3 endpoint (moto's server on 127.0.0.1): conditional
create, refuse a live holder, take over a silent one (age by the server's clock), one winner
among concurrent drivers, and one-line errors for a missing bucket."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from sweep.errors import UserError
from sweep.run.lease import LEASE_FILE, Lease, LeaseHeld, LeaseLost, S3Backend
from sweep.run.store import RunStore
from tests.support.s3 import moto_server

BUCKET = "vitsweep-lease"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture()
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    client = _client()
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return endpoint


def _client():
    from sweep.run.store import s3_client

    return s3_client()


def _holder(key: str) -> dict:
    return json.loads(_client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _put_holder(key: str, **fields: object) -> None:
    now = datetime.now(timezone.utc).isoformat()
    holder = {"host": "elsewhere.example", "pid": 1, "pid_started": None, "run_id": "r0", "token": "old",
              "acquired_at": now, "heartbeat_at": now, "heartbeat_s": 1.0, "timeout_s": 30.0, **fields}
    _client().put_object(Bucket=BUCKET, Key=key, Body=json.dumps(holder).encode())


def test_acquire_refuse_release(s3: str) -> None:
    store = RunStore(f"s3://{BUCKET}/runs/a")
    lease = Lease.acquire(store, run_id="run-a")
    assert isinstance(lease.backend, S3Backend)
    assert _holder(f"runs/a/{LEASE_FILE}")["pid"] == os.getpid()
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} \\(run run-a\\)"):
        Lease.acquire(store)
    lease.set_run_id("run-a2")
    assert _holder(f"runs/a/{LEASE_FILE}")["run_id"] == "run-a2"
    lease.release()
    assert "Contents" not in _client().list_objects_v2(Bucket=BUCKET, Prefix="runs/a/")
    Lease.acquire(store).release()


def test_silent_remote_holder_is_taken_over_by_server_age(s3: str) -> None:
    key = f"runs/b/{LEASE_FILE}"
    store = RunStore(f"s3://{BUCKET}/runs/b")
    _put_holder(key, timeout_s=60.0)
    with pytest.raises(LeaseHeld, match="elsewhere.example pid 1"):
        Lease.acquire(store)
    _put_holder(key, timeout_s=1.0)
    time.sleep(2.5)  # the object's Last-Modified is now older than the holder's 1 s timeout
    lease = Lease.acquire(store)
    assert lease.took_over["host"] == "elsewhere.example" and lease.took_over["age_s"] >= 1
    assert _holder(key)["took_over"]["token"] == "old"
    # a beat after someone else replaced the object fails (If-Match on the ETag we last saw)
    _put_holder(key, host="thief.example")
    with pytest.raises(LeaseLost, match="thief.example"):
        lease.beat()
    lease.release()
    assert _holder(key)["host"] == "thief.example"  # not deleted: the conditional delete refused


def _contend(root: str, env: dict[str, str], barrier, results) -> None:
    os.environ.update(env)
    barrier.wait()
    try:
        lease = Lease.acquire(RunStore(root))
        results.put("won")
        time.sleep(1.5)
        lease.release()
    except LeaseHeld:
        results.put("refused")


def test_concurrent_drivers_one_winner(s3: str) -> None:
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(5), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(f"s3://{BUCKET}/runs/c", env, barrier, results)) for _ in range(5)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["refused"] * 4 + ["won"]


def test_missing_bucket_is_one_line(s3: str) -> None:
    with pytest.raises(UserError) as err:
        Lease.acquire(RunStore("s3://no-such-bucket-zz/run"))
    assert "no-such-bucket-zz" in str(err.value) and "NoSuchBucket" in str(err.value) and "\n" not in str(err.value)
