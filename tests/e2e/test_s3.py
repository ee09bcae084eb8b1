"""S3 for real: a local S3-compatible endpoint (moto's standalone server on 127.0.0.1) and a sweep
end to end against it: shards made to and read from s3://, results, progress and the lease as
objects, a SIGKILLed driver resumed without duplicates, `vitsweep query` and `report` reading the
run in place; a missing bucket and missing credentials are one line and exit status 2."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.s3 import moto_server
from tests.support.sweeps import LINEAR, PYTHON, REPO, ROWS_PER_PAIR, kill_ray_processes, make_shards, ray_env, write_spec

pytestmark = pytest.mark.slow

BUCKET = "vitsweep-test"
GATED = "tests.support.encoders:gated_linear_encoder"
KEYS = {  # the identity of one row in each table
    "match": ("unit_id", "pair_id"),
    "perturb": ("unit_id", "pair_id", "eps"),
    "lipschitz": ("unit_id", "pair_id", "family", "direction", "h"),
    "pairs": ("unit_id", "pair_id"),
    "units": ("unit_id",),
}


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free port, a bucket, and the environment that points at it."""
    with moto_server() as url:
        env = {**ray_env(), "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        _client(env).create_bucket(Bucket=BUCKET)
        yield env


def _client(env: dict[str, str]):
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _objects(env: dict[str, str], prefix: str) -> dict[str, dict]:
    """key -> object listing entry (ETag, LastModified, Size) under prefix."""
    client, out, token = _client(env), {}, None
    while True:
        kwargs = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kwargs)
        out.update({o["Key"]: o for o in page.get("Contents", [])})
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def _read_table(env: dict[str, str], prefix: str, table: str) -> list[dict]:
    """Every row of one table, read back from the bucket through boto (not the code under test)."""
    import io

    import pyarrow.parquet as pq

    client, rows = _client(env), []
    for key in sorted(_objects(env, f"{prefix}/results/{table}/")):
        if key.endswith(".parquet"):
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            rows += pq.read_table(io.BytesIO(body)).to_pylist()
    return rows


def _cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "sweep.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _image_folder(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return root


def test_sweep_on_s3_with_kill_and_resume(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = s3_env
    made = _cli(env, "shards", "make", "--from-folder", str(_image_folder(tmp_path / "images")), "--out",
                f"s3://{BUCKET}/shards", "--pairs", "12", "--shard-size", "3", "--workers", "1")
    assert made.returncode == 0, made.stderr
    shard_keys = sorted(k for k in _objects(env, "shards/") if k.endswith(".tar"))
    assert len(shard_keys) == 4 and "shards/manifest.json" in _objects(env, "shards/")

    run = f"s3://{BUCKET}/runs/r1"
    spec = write_spec(tmp_path / "spec.yaml", f"s3://{BUCKET}/shards", None, batch_size=3,
                      models=[{"name": GATED, "weights": "factory"}])
    gate = tmp_path / "gate"
    driver_env = {**env, "VITSWEEP_TEST_GATE": str(gate), "VITSWEEP_TEST_SLEEP_S": "0.05"}
    args = [PYTHON, "-m", "sweep.cli", "run", str(spec), "--out", run, "--actors", "2", "--device", "cpu", "--no-progress"]
    first = subprocess.Popen(args, cwd=REPO, env=driver_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not Path(f"{gate}.started").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no unit started"
            time.sleep(0.2)
        lease = json.loads(_client(env).get_object(Bucket=BUCKET, Key="runs/r1/lease.json")["Body"].read())
        assert lease["pid"] == first.pid and lease["run_id"].startswith("test-")
        refused = _cli(env, "run", str(spec), "--out", run, "--no-progress")
        assert refused.returncode == 2 and f"pid {first.pid}" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

        gate.touch()
        while not [k for k in _objects(env, "runs/r1/results/units/") if k.endswith(".parquet")]:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline + 240, "no unit finished"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        kill_ray_processes(env["RAY_TMPDIR"])
    finally:
        if first.poll() is None:
            first.kill()
        gate.touch()
    before = {k: o["ETag"] for k, o in _objects(env, "runs/r1/results/units/").items() if k.endswith(".parquet")}
    n_units = 3 * len(shard_keys)
    assert 1 <= len(before) < n_units

    resumed = _cli(env, "run", str(spec), "--out", run, "--actors", "2", "--device", "cpu", "--no-progress")
    kill_ray_processes(env["RAY_TMPDIR"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "took over the lease of a dead driver" in resumed.stderr and f"pid {first.pid}" in resumed.stderr

    objects = _objects(env, "runs/r1/")
    after = {k: o["ETag"] for k, o in objects.items() if k.startswith("runs/r1/results/units/") and k.endswith(".parquet")}
    assert len(after) == n_units and {k: after[k] for k in before} == before  # finished units were not redone
    assert "runs/r1/lease.json" not in objects and not [k for k in objects if k.endswith(".tmp")]
    progress = json.loads(_client(env).get_object(Bucket=BUCKET, Key="runs/r1/progress.json")["Body"].read())
    assert progress["state"] == "finished" and progress["units_skipped"] == len(before)
    manifest = json.loads(_client(env).get_object(Bucket=BUCKET, Key="runs/r1/manifest.json")["Body"].read())
    assert manifest["lease_takeover"]["pid"] == first.pid

    pairs = 12
    for table, key in KEYS.items():
        rows = _read_table(env, "runs/r1", table)
        seen = [tuple(r[c] for c in key) for r in rows]
        assert len(seen) == len(set(seen)), f"duplicate rows in {table}"
        if table in ROWS_PER_PAIR:
            assert len(rows) == pairs * ROWS_PER_PAIR[table], table
    assert {r["status"] for r in _read_table(env, "runs/r1", "units")} == {"ok"}

    # query and report read the run in place
    count = _cli(env, "query", run, "SELECT probe, count(*) AS n FROM pairs GROUP BY probe ORDER BY probe", "--format", "json")
    assert count.returncode == 0, count.stderr
    assert {r["probe"]: r["n"] for r in json.loads(count.stdout)} == {"lipschitz": pairs, "match": pairs, "perturb": pairs}
    rows = _cli(env, "query", run, "SELECT count(*) AS n FROM lipschitz WHERE status = 'ok'", "--format", "json")
    assert json.loads(rows.stdout) == [{"n": pairs * ROWS_PER_PAIR["lipschitz"]}], rows.stderr
    report = _cli(env, "report", run, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert manifest["run_id"] in json.dumps(data)

    replay = _cli(env, "replay", run, "--pair", "pair_00000004", "--probe", "match", "--json", "--out", str(tmp_path / "replay"))
    assert replay.returncode == 0 and json.loads(replay.stdout)["agrees"] is True, replay.stdout + replay.stderr


def test_missing_bucket_and_credentials_are_one_line(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = s3_env
    local = tmp_path / "shards"
    make_shards(local, 1, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(local), None, models=[{"name": LINEAR, "weights": "factory"}])
    cases = [
        (env, ("run", str(spec), "--out", "s3://no-such-bucket-zz/run"), "no-such-bucket-zz"),
        (env, ("query", "s3://no-such-bucket-zz/run", "SELECT 1"), "no-such-bucket-zz"),
        ({k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} | {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")},
         ("run", str(spec), "--out", f"s3://{BUCKET}/runs/nocreds"), "credentials"),
    ]
    for case_env, args, needle in cases:
        proc = _cli(case_env, *args, timeout=300)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not _objects(env, "runs/nocreds/")
