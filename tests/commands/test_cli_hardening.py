"""Bad input to every command, as a careless or hostile user gives it (issue 12): each runs the
real CLI and asserts the exit status, one line on stderr naming the problem, no traceback, and
that no user file changed. None of these starts Ray.

`vitsweep(...)` is the CLI in a subprocess (`python -m sweep.cli`), as a user runs it: used for
every command at least once, and wherever a connection is tried (Ray, an object store), so start-up
noise and the entry point stay tested end to end. `vitsweep_here(...)` is the same entry point in
this process (tests/support/cli_inproc.py): used where a subprocess would spend its time importing torch
to reach the same check."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from tests.support.cli_inproc import run_cli
from tests.support.sweeps import LINEAR, REPO, make_shards

ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "RAY_USAGE_STATS_ENABLED": "0"}


def vitsweep(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweep.cli", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def vitsweep_here(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None,
                  timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """As vitsweep(), in this process (`timeout` is unused: nothing here waits on a network)."""
    return run_cli(*args, cwd=cwd, env=env or ENV)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused command (asserting status, one line, no traceback)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under folder -> a hash of its bytes (to show nothing was written or changed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    make_shards(folder, 2, 3)
    return folder


@pytest.fixture()
def unwritable(tmp_path: Path) -> Path:
    """A folder nothing can be created in (a read-only folder; as root, /sys)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    candidates = [folder, Path("/sys")]
    for candidate in candidates:
        try:
            (candidate / "probe-dir").mkdir()
        except OSError:
            return candidate
        (candidate / "probe-dir").rmdir()
    pytest.skip("no unwritable folder on this machine")


def spec_file(tmp_path: Path, shards: Path, name: str = "spec.yaml", **changes) -> Path:
    data = {"name": "t", "models": [{"name": LINEAR, "weights": "factory"}], "probes": [{"name": "match"}],
            "shards": str(shards), "output": str(tmp_path / "run")}
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- table row 1: the OSError family, corrupt files -------------------------------------------

def test_run_output_is_a_file(tmp_path: Path, shards: Path) -> None:
    target = tmp_path / "results.txt"
    target.write_text("my notes\n")
    spec = spec_file(tmp_path, shards, output=str(target))
    line = one_line_error(vitsweep_here("run", spec))
    assert line == f"vitsweep run: error: {target}: exists and is a file, not a run folder"
    assert target.read_text() == "my notes\n"


def test_run_out_unwritable(tmp_path: Path, shards: Path, unwritable: Path) -> None:
    before = snapshot(tmp_path)
    line = one_line_error(vitsweep_here("run", spec_file(tmp_path, shards), "--out", unwritable / "run"))
    assert line.startswith(f"vitsweep run: error: {unwritable / 'run'}: cannot write there ({unwritable}: ")
    assert snapshot(tmp_path) == {**before, "spec.yaml": snapshot(tmp_path)["spec.yaml"]}


def test_run_out_on_unreachable_object_store(tmp_path: Path, shards: Path) -> None:
    env = {**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_EC2_METADATA_DISABLED": "true"}
    line = one_line_error(vitsweep("run", spec_file(tmp_path, shards), "--out", "s3://no-such-bucket/run", env=env))
    assert line.startswith("vitsweep run: error: s3://no-such-bucket/run: cannot reach the output (")


def test_run_corrupt_manifest_is_refused_and_kept(tmp_path: Path, shards: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"run_id": "t-1", "devices": [')
    before = snapshot(run)
    line = one_line_error(vitsweep_here("run", spec_file(tmp_path, shards)))
    assert line.startswith(f"vitsweep run: error: {run / 'manifest.json'}: corrupt manifest (")
    assert snapshot(run) == before


def test_run_binary_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(bytes(range(256)) * 4)
    line = one_line_error(vitsweep("run", spec))
    assert line == f"vitsweep run: error: {spec}: not a text file (a spec is YAML)"


def test_probe_out_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "o"
    target.write_text("keep me")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    line = one_line_error(vitsweep_here("probe", "match", "--model", LINEAR, "--weights", "factory",
                                   "--src", tmp_path / "a.png", "--tgt", tmp_path / "a.png", "--out", target))
    assert line == f"vitsweep probe: error: --out {target}: exists and is a file, not a folder"
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("case", ["folder", "missing folder", "unwritable"])
def test_query_output_unusable(fixture_run: Path, tmp_path: Path, case: str, request: pytest.FixtureRequest) -> None:
    if case == "folder":
        output, expected = tmp_path, f"--output {tmp_path}: is a folder; give a file name"
    elif case == "missing folder":
        output = tmp_path / "nowhere" / "x.csv"
        expected = f"--output {output}: the folder {output.parent} does not exist"
    else:
        output = request.getfixturevalue("unwritable") / "x.csv"
        expected = f"vitsweep query: error: {output}: "
    line = one_line_error(vitsweep("query", fixture_run, "--named", "overview", "--format", "csv", "--output", output))
    assert expected in line
    assert not output.is_file()


def test_demo_out_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    target.write_text("keep me")
    line = one_line_error(vitsweep_here("demo", "--out", target))
    assert line == f"vitsweep demo: error: --out {target}: exists and is a file, not a folder"
    assert target.read_text() == "keep me"


# ---- rows 2, 10, 11: dashboard ------------------------------------------------------------------

def test_dashboard_host_not_on_this_machine(fixture_run: Path) -> None:
    result = vitsweep("dashboard", fixture_run, "--host", "203.0.113.7", "--port", "8599", timeout=60)
    line = one_line_error(result)
    assert line.startswith("vitsweep dashboard: error: cannot serve on 203.0.113.7:8599: ")
    assert "http://" not in result.stdout


def test_dashboard_port_in_use(fixture_run: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = vitsweep("dashboard", fixture_run, "--port", str(port), timeout=60)
    line = one_line_error(result)
    assert line == f"vitsweep dashboard: error: cannot serve on 127.0.0.1:{port}: Address already in use"
    assert "http://" not in result.stdout


def test_dashboard_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    line = one_line_error(vitsweep("dashboard", tmp_path, timeout=60))
    assert line == f"vitsweep dashboard: error: {tmp_path}: not a vitsweep run (no spec.yaml, manifest.json, progress.json or results/)"


# ---- row 4: the spec's models, checked before Ray starts ---------------------------------------

@pytest.mark.parametrize("model, expected", [
    ({"name": "vit_tiny_patch16_244"},
     "models.0: unknown timm model 'vit_tiny_patch16_244' (closest: vit_tiny_patch16_224, "),
    ({"name": "vit_tiny_patch16_224", "weights": "file:/nonexistent.pt"},
     "models.0.weights: weights file '/nonexistent.pt' does not exist"),
    ({"name": "vit_tiny_patch16_224", "embed": "cls:99"},
     "models.0: embedding point 'cls:99': vit_tiny_patch16_224 has 12 blocks, so the block must be in [0, 11]"),
])
def test_bad_model_is_refused_before_ray(tmp_path: Path, shards: Path, model: dict, expected: str) -> None:
    spec = spec_file(tmp_path, shards, models=[model])
    line = one_line_error(vitsweep("run", spec, "--address", "127.0.0.1:9"))  # never reached
    assert line.startswith(f"vitsweep run: error: {spec}: {expected}"), line
    assert not (tmp_path / "run").exists()


def test_unknown_model_suggestions_by_distance_and_family(tmp_path: Path, shards: Path) -> None:
    spec = spec_file(tmp_path, shards, models=["deit_small_patch16_22"])
    line = one_line_error(vitsweep_here("run", spec))
    assert "closest: deit_small_patch16_224," in line
    assert "same family: " in line and "deit_small_distilled_patch16_224" in line


# ---- row 5: the shard set ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random bytes", "notes only"])
def test_bad_shard_set_is_refused_before_ray(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    shard = folder / "pairs-000000.tar"
    if kind == "random bytes":
        shard.write_bytes(os.urandom(4096))
        expected = str(shard)
    else:
        with tarfile.open(shard, "w") as tar:
            data = b"just notes"
            info = tarfile.TarInfo("notes.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        expected = "not a pair shard"
    spec = spec_file(tmp_path, folder)
    line = one_line_error(vitsweep_here("run", spec, "--address", "127.0.0.1:9"))
    assert "shards check" in line and expected in line, line
    assert not (tmp_path / "run").exists()


# ---- rows 6, 8: never overwrite a user's files ------------------------------------------------------

def test_output_dot_beside_the_users_spec_is_refused(tmp_path: Path, shards: Path) -> None:
    spec = tmp_path / "spec.yaml"
    text = "# my sweep, with comments\n" + yaml.safe_dump(
        {"models": [{"name": LINEAR, "weights": "factory"}], "probes": [{"name": "match"}], "shards": str(shards),
         "output": "."})
    spec.write_text(text)
    before = snapshot(tmp_path)
    line = one_line_error(vitsweep_here("run", "spec.yaml", cwd=tmp_path))
    assert "holds files (spec.yaml) but is not a vitsweep run" in line
    assert snapshot(tmp_path) == before


def test_demo_into_another_run_writes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "other"
    run.mkdir()
    (run / "manifest.json").write_text('{"run_id": "other-1", "result_hash": "abc"}\n')
    (run / "spec.yaml").write_text("name: other\n")
    before = snapshot(run)
    line = one_line_error(vitsweep_here("demo", "--out", run))
    assert line == f"vitsweep demo: error: --out {run}: holds a run that is not a demo; choose another --out"
    assert snapshot(run) == before and not (run / "shards").exists()


# ---- row 9: arguments first; a large grid asks for --yes -----------------------------------------------

def test_actors_zero_is_refused_before_the_spec_is_read(tmp_path: Path) -> None:
    result = vitsweep("run", tmp_path / "missing.yaml", "--actors", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "vitsweep run: error: argument --actors: must be at least 1, got 0"


def test_a_large_grid_asks_for_yes(tmp_path: Path, shards: Path) -> None:
    lrs = [round(0.001 * (i + 1), 6) for i in range(1000)]  # 1000 settings x 2 shards
    spec = spec_file(tmp_path, shards, probes=[{"name": "match", "params": {"lr": lrs}}])
    line = one_line_error(vitsweep_here("run", spec, "--address", "127.0.0.1:9"))
    assert line == "vitsweep run: error: 2000 units to run (2000 in the spec); check the grid, then rerun with --yes"
    assert not (tmp_path / "run").exists()
    # with --yes it goes on (to the unreachable address, refused there)
    line = one_line_error(vitsweep("run", spec, "--address", "127.0.0.1:9", "--yes"))
    assert "cannot connect to the Ray cluster at 127.0.0.1:9" in line


# ---- rows 12-14: query ------------------------------------------------------------------------------------

def test_query_sql_forgotten(fixture_run: Path) -> None:
    line = one_line_error(vitsweep("query", fixture_run, fixture_run))
    assert line == f"vitsweep query: error: the SQL query is missing: {fixture_run} is a path (a run), so give the query after the runs"


@pytest.mark.parametrize("sql, word", [("INSTALL httpfs", "INSTALL"), ("USE memory", "USE"), ("CHECKPOINT", "CHECKPOINT")])
def test_query_names_the_statement_written(fixture_run: Path, sql: str, word: str) -> None:
    line = one_line_error(vitsweep("query", fixture_run, sql))
    assert line == f"vitsweep query: error: vitsweep query is read-only: {word} statements are refused"


def test_query_named_with_sql_shows_querys_usage(fixture_run: Path) -> None:
    result = vitsweep("query", fixture_run, "--named", "overview", "SELECT 1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: vitsweep query ")
    assert result.stderr.strip().splitlines()[-1] == "vitsweep query: error: unrecognized arguments: SELECT 1"


# ---- rows 15-18: parameters, values, strict types ---------------------------------------------------------

def test_probe_empty_eps_names_the_parameter(tmp_path: Path) -> None:
    line = one_line_error(vitsweep_here("probe", "perturb", "--model", LINEAR, "--src", "a", "--tgt", "b",
                                   "--out", tmp_path / "o", "--param", "eps=[]"))
    assert line == "vitsweep probe: error: bad perturb parameter eps=[]: must be a non-empty list"


def test_bad_weights_value_is_printed_once(tmp_path: Path, shards: Path) -> None:
    spec = spec_file(tmp_path, shards, models=[{"name": "vit_tiny_patch16_224", "weights": "random:abc"}])
    line = one_line_error(vitsweep("run", spec))
    assert line.count("random:abc") == 1
    assert line.endswith("models.0.weights: must be pretrained, random:<seed> or file:<path> (got 'random:abc')")


def test_run_a_folder(tmp_path: Path) -> None:
    line = one_line_error(vitsweep("run", tmp_path))
    assert line == f"vitsweep run: error: {tmp_path}: is a folder, not a spec file (give the YAML file, e.g. {tmp_path}/spec.yaml)"


@pytest.mark.parametrize("change, expected", [
    ({"seed": True}, "seed: must be a whole number, not true/false (got True)"),
    ({"batch_size": 8.5}, "batch_size: Input should be a valid integer (got 8.5)"),
    ({"compile": "yes"}, "compile: Input should be a valid boolean (got 'yes')"),
    ({"probes": [{"name": "match", "params": {"lr": None}}]},
     "probes.0.params.lr: null is not a value (leave the key out for its default)"),
])
def test_spec_types_are_strict(tmp_path: Path, shards: Path, change: dict, expected: str) -> None:
    spec = spec_file(tmp_path, shards, **change)
    line = one_line_error(vitsweep_here("run", spec))
    assert line == f"vitsweep run: error: {spec}: {expected}"


@pytest.mark.parametrize("args, expected", [
    (("query", "{run}", "--named", "overview", "--limit", "-1"), "argument --limit: must be at least 0, got -1"),
    (("shards", "make", "--demo", "--out", "{tmp}/s", "--workers", "-1"), "argument --workers: must be at least 0, got -1"),
    (("probe", "match", "--model", "m", "--src", "a", "--tgt", "b", "--out", "{tmp}/o", "--seed", "-1"),
     "argument --seed: must be at least 0, got -1"),
])
def test_negative_counts_are_refused(fixture_run: Path, tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    result = vitsweep_here(*(a.format(run=fixture_run, tmp=tmp_path) for a in args))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"error: {expected}")
    assert list(tmp_path.iterdir()) == []


# ---- the paragraph ---------------------------------------------------------------------------------------

def test_no_arguments_prints_the_help() -> None:
    result = vitsweep()
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: vitsweep ")
    assert all(name in result.stdout for name in ("demo", "shards", "run", "probe", "query", "report", "dashboard"))


@pytest.mark.parametrize("command", ["demo", "shards", "run", "probe", "query", "report", "dashboard"])
def test_every_command_help_has_a_description_and_examples(command: str) -> None:
    result = vitsweep(command, "--help")
    assert result.returncode == 0
    usage, _, rest = result.stdout.partition("\n\n")
    assert usage.startswith(f"usage: vitsweep {command}")
    assert rest.strip() and f"    vitsweep {command} " in rest  # an indented example line


def test_probe_help_lists_parameters_and_defaults_and_run_help_the_spec_format() -> None:
    text = vitsweep_here("probe", "--help").stdout
    assert "match: " in text and "max_steps=1000" in text and "lr=0.01" in text
    assert "perturb: " in text and "steps=20" in text and "lipschitz: " in text and "top_k=4" in text
    text = vitsweep_here("run", "--help").stdout
    assert "spec format" in text and "vitsweep init" in text and "--yes" in text


def test_probes_shorthand_like_models(shards: Path) -> None:
    from sweep.run.spec import parse_spec

    base = {"models": [{"name": LINEAR, "weights": "factory"}], "shards": str(shards)}
    short = parse_spec({**base, "probes": ["match", "perturb"]})
    full = parse_spec({**base, "probes": [{"name": "match"}, {"name": "perturb"}]})
    assert [u.unit_id for u in short.units] == [u.unit_id for u in full.units] and len(short.units) == 4


def test_failed_address_leaves_no_run_folder(tmp_path: Path, shards: Path) -> None:
    spec = spec_file(tmp_path, shards)
    line = one_line_error(vitsweep("run", spec, "--address", "127.0.0.1:9"))
    assert line.startswith("vitsweep run: error: cannot connect to the Ray cluster at 127.0.0.1:9")
    assert not (tmp_path / "run").exists()


def test_report_into_a_used_folder_replaces_the_old_figures(fixture_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = vitsweep_here("report", fixture_run, "--out", out)
    assert result.returncode == 0, result.stderr
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures
    (out / "fig-old-model-match.png").write_bytes(b"an old figure")
    (out / "notes.txt").write_text("mine")
    result = vitsweep_here("report", fixture_run, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == figures
    assert (out / "notes.txt").read_text() == "mine"


def test_query_output_is_not_overwritten_without_force(fixture_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "rows.csv"
    target.write_text("precious\n")
    line = one_line_error(vitsweep("query", fixture_run, "--named", "overview", "--format", "csv", "--output", target))
    assert line == f"vitsweep query: error: --output {target}: exists; add --force to replace it"
    assert target.read_text() == "precious\n"
    result = vitsweep("query", fixture_run, "--named", "overview", "--format", "csv", "--output", target, "--force")
    assert result.returncode == 0 and target.read_text().startswith("model,") or target.read_text() != "precious\n"


def test_known_failures_become_one_line_in_one_place() -> None:
    """sweep.errors.as_user_error covers what the commands let through (a new command inherits it)."""
    import json

    import pyarrow as pa
    import yaml as pyyaml

    from sweep.errors import UserError, as_user_error

    cases = [
        (FileExistsError(17, "File exists", "/x/out"), "/x/out: File exists"),
        (IsADirectoryError(21, "Is a directory", "/x/dir"), "/x/dir: Is a directory"),
        (NotADirectoryError(20, "Not a directory", "/x/f/run"), "/x/f/run: Not a directory"),
        (PermissionError(13, "Permission denied", "/ro/run"), "/ro/run: Permission denied"),
        (json.JSONDecodeError("Expecting value", "{", 1), "a file is not valid JSON (Expecting value at line 1 column 2)"),
        (pa.ArrowInvalid("Parquet magic bytes not found"), "cannot read a Parquet/Arrow file (Parquet magic bytes not found)"),
        (ConnectionError("could not reach the GCS at 10.0.0.1:6379"), "connection failed: could not reach the GCS at 10.0.0.1:6379"),
    ]
    from ray.exceptions import RaySystemError

    cases.append((RaySystemError("the GCS went away"), "Ray: System error: the GCS went away"))
    try:
        pyyaml.safe_load("a: [1,\n")
    except pyyaml.YAMLError as err:
        cases.append((err, "not valid YAML ("))
    for err, expected in cases:
        user = as_user_error(err)
        assert isinstance(user, UserError) and str(user).startswith(expected), (err, user)
        assert "\n" not in str(user) and user.exit_code == 2
    assert as_user_error(ZeroDivisionError()) is None  # a bug keeps its traceback
