"""S3 that is not there: no credentials, an endpoint that does not answer, a bucket that does not
exist. Every command that reads S3 says so in one line naming the credentials, the endpoint or
the bucket, with exit status 2 and no traceback (docs/cluster.md); the dashboard reads s3:// runs
as query and report do. Issue 24 items 5 and 10: before, query, report, plan and shards check
ended in a botocore traceback (exit 1), replay and labels in a line cut off after "Is this a
'parquet' file?", a missing bucket read "not a vitsweep run" / "no finished units", and the
dashboard refused an s3:// run as "no such run directory"."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.runs import make_fixture_run
from tests.support.s3 import moto_server
from tests.support.sweeps import LINEAR, PYTHON, REPO, make_shards, write_spec

pytestmark = pytest.mark.slow

BUCKET = "vitsweep-faults"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A moto server with a bucket holding a fixture run (s3://BUCKET/run) and a shard folder."""
    import botocore.session

    tmp = tmp_path_factory.mktemp("s3-faults")
    run = make_fixture_run(tmp / "local")
    make_shards(tmp / "shards", 1, 2)
    with moto_server() as url:
        env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        for root, prefix in ((run, "run"), (tmp / "shards", "shards")):
            for path in root.rglob("*"):
                if path.is_file():
                    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(root).as_posix()}",
                                      Body=path.read_bytes())
        yield {"env": env, "tmp": tmp, "local_run": run}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"PYTHONPATH": str(REPO)} | env
    return subprocess.run([PYTHON, "-m", "sweep.cli", *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=300)


def test_s3_failures_are_one_line_naming_credentials_endpoint_or_bucket(s3: dict[str, object]) -> None:
    env: dict[str, str] = s3["env"]  # type: ignore[assignment]
    tmp: Path = s3["tmp"]  # type: ignore[assignment]
    spec = write_spec(tmp / "spec.yaml", f"s3://{BUCKET}/shards", None, models=[{"name": LINEAR, "weights": "factory"}])
    none = str(tmp / "no-such-file")
    nocreds = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} | {
        "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_CONFIG_FILE": none}
    dead = env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    run, missing = f"s3://{BUCKET}/run", "s3://no-such-bucket-zz/run"
    cases = [
        (nocreds, ["query", run, "SELECT 1"], "credentials"),
        (nocreds, ["report", run, "--out", str(tmp / "r1")], "credentials"),
        (nocreds, ["plan", str(spec)], "credentials"),
        (nocreds, ["run", str(spec), "--out", str(tmp / "nocreds-run")], "credentials"),
        (nocreds, ["shards", "check", f"s3://{BUCKET}/shards"], "credentials"),
        (nocreds, ["labels", str(s3["local_run"]), "--bank", f"s3://{BUCKET}/shards"], "credentials"),
        (dead, ["query", run, "SELECT 1"], "cannot reach the endpoint"),
        (dead, ["report", run, "--out", str(tmp / "r2")], "cannot reach the endpoint"),
        (dead, ["plan", str(spec)], "cannot reach the endpoint"),
        (dead, ["shards", "check", f"s3://{BUCKET}/shards"], "cannot reach the endpoint"),
        (dead, ["replay", run, "--pair", "pair-000000", "--out", str(tmp / "rp")], "cannot reach the endpoint"),
        (env, ["query", missing, "SELECT 1"], "bucket s3://no-such-bucket-zz does not exist"),
        (env, ["report", missing, "--out", str(tmp / "r3")], "bucket s3://no-such-bucket-zz does not exist"),
        (env, ["labels", missing], "bucket s3://no-such-bucket-zz does not exist"),
        (env, ["replay", missing, "--pair", "pair-000000", "--out", str(tmp / "rp")], "bucket s3://no-such-bucket-zz does not exist"),
        (env, ["shards", "check", "s3://no-such-bucket-zz/shards"], "bucket s3://no-such-bucket-zz does not exist"),
    ]
    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(lambda case: _cli(case[0], case[1]), cases))
    bad = []
    for (_, args, needle), proc in zip(cases, done):
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 2 or len(lines) != 1 or needle not in proc.stderr or "Traceback" in proc.stderr:
            bad.append((args[:2], proc.returncode, proc.stderr[-400:]))
    assert not bad, bad
    if dead["AWS_ENDPOINT_URL"] not in " ".join(p.stderr for p in done[6:11]):
        pytest.fail("the endpoint is not named")


def test_the_dashboard_reads_an_s3_run(s3: dict[str, object], open_app, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.runs import resolve_run_dirs, run_status
    from sweep.commands.dashboard import check_runs
    from sweep.errors import UserError

    for key, value in s3["env"].items():  # type: ignore[union-attr]
        monkeypatch.setenv(key, value)
    run = f"s3://{BUCKET}/run"
    assert check_runs([run]) == [run]
    with pytest.raises(UserError, match="bucket s3://no-such-bucket-zz does not exist"):
        check_runs(["s3://no-such-bucket-zz/run"])
    monkeypatch.setenv("VITSWEEP_RUNS", f"/tmp/a:{run}")
    assert resolve_run_dirs() == [Path("/tmp/a"), run]  # the URI's ":" does not split the list
    assert run_status(run).state == "complete" and run_status(Path(run)).state == "complete"
    at = open_app(run)
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(str(m.value) for m in [*at.warning, *at.info, *at.error])
    assert "does not exist" not in shown and "Nothing to show" not in shown, shown
    at.switch_page("views/pairs.py").run()
    assert not at.exception, [e.value for e in at.exception]
