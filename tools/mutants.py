"""Mutation testing of the core modules with mutmut, one module at a time (`make mutants`).

For each module below, mutmut gets a scratch directory `.mutants/<module>/` holding links to the
project and a `[tool.mutmut]` section that mutates only that module and runs only that module's
fast tests (mutmut further narrows each mutant to the tests that execute the mutated function).
At the end it prints, per module, how many mutants were killed, survived or timed out, and
writes the survivors' diffs to `.mutants/<module>/survivors.txt` for review.

    python tools/mutants.py                          # every module (hours on a small machine)
    python tools/mutants.py sweep/run/store.py       # one module
    python tools/mutants.py --list                   # the modules and their tests

It runs at low priority with one test process (`nice -n 19`, `--max-children 1`) so a shared
machine stays usable. Not part of CI. Results and judgements of equivalent mutants: TESTING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutants"
MUTMUT = Path(sys.executable).with_name("mutmut")

# module -> its fast tests (no Ray, no browser)
MODULES: dict[str, list[str]] = {
    # store: its own tests and the store-level crash tests (the worker-level ones run a whole
    # unit per test, too slow to repeat per mutant; they count for worker.py)
    "sweep/run/store.py": ["tests/test_store.py"] + [
        f"tests/test_store_crash.py::{name}" for name in (
            "test_a_failed_rewrite_keeps_the_good_file",
            "test_temporary_names_are_hidden_siblings_that_never_end_in_parquet",
            "test_a_killed_writer_leaves_only_a_hidden_temp_file",
            "test_write_text_is_atomic_and_leaves_no_temp",
            "test_a_write_failing_before_any_byte_raises_its_own_error")],
    "analysis/guard.py": ["tests/test_guard.py"],
    "analysis/named.py": ["tests/test_named_queries.py", "tests/test_named_answers.py"],
    "sweep/run/worker.py": ["tests/test_worker_parts.py", "tests/test_worker.py", "tests/test_store_crash.py"],
    "sweep/probes/base.py": ["tests/test_probe_contract.py"],
    "sweep/probes/metrics.py": ["tests/test_probe_contract.py"],
    "sweep/probes/match.py": ["tests/test_probe_match.py"],
    "sweep/probes/perturb.py": ["tests/test_probe_perturb.py"],
    # lipschitz and its row queues: the micro-ViT reference tests first (seconds), then the
    # linear-encoder closed forms and the tiny-ViT gap test
    "sweep/probes/lipschitz.py": ["tests/test_probe_lipschitz_batched.py", "tests/test_probe_rows.py",
                                  "tests/test_probe_lipschitz.py"],
    "sweep/probes/rows.py": ["tests/test_probe_rows.py", "tests/test_probe_lipschitz_batched.py"],
    "sweep/probes/labels.py": ["tests/test_labels_knn.py", "tests/test_labels_pass.py"],
    "sweep/probes/loop.py": ["tests/test_probe_match.py"],
    "sweep/probes/common.py": ["tests/test_probe_match.py", "tests/test_probe_perturb.py"],
}
LINKED = ("sweep", "analysis", "dashboard", "tests")


def _slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def _config(module: str, tests: list[str]) -> str:
    """The project's pyproject.toml (for pytest's settings) plus a [tool.mutmut] for `module`."""
    base = (REPO / "pyproject.toml").read_text()
    base = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "\n", base, flags=re.S)
    return base + "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(['sweep', 'analysis'])}",
        f"only_mutate = {json.dumps([module])}",
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-q", "-x"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'also_copy = ["dashboard"]',
        'process_isolation = "forkserver"',
        # mutmut's CPU-time limit, (estimate + 1 s) x multiplier x 2, misfired as "timeout" on a
        # loaded shared machine; these modules have no loops that a mutant could make endless
        "timeout_multiplier = 200.0",
        "use_git_change_detection = false",
    ]) + "\n"


def _prepare(module: str, tests: list[str], fresh: bool) -> Path:
    work = WORK / _slug(module)
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = work / name
        if not link.exists():
            link.symlink_to(REPO / name)
    (work / "pyproject.toml").write_text(_config(module, tests))
    return work


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # import only the mutated copy
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    return env


def _results(work: Path) -> dict[str, str]:
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=work, env=_env(),
                         capture_output=True, text=True, check=False).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def run_module(module: str, fresh: bool) -> dict[str, int]:
    tests = [t for t in MODULES[module] if (REPO / t.split("::")[0]).exists()]
    if not tests:
        print(f"{module}: none of its tests exist ({', '.join(MODULES[module])}); skipped")
        return {}
    work = _prepare(module, tests, fresh)
    print(f"== {module}: tests {' '.join(tests)}", flush=True)
    t0 = time.monotonic()
    subprocess.run(["nice", "-n", "19", str(MUTMUT), "run", "--max-children", "1"], cwd=work,
                   env=_env(), check=False)
    statuses = _results(work)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = sorted(n for n, s in statuses.items() if s not in ("killed", "skipped"))
    with (work / "survivors.txt").open("w") as fh:
        for name in survivors:
            diff = subprocess.run([str(MUTMUT), "show", name], cwd=work, env=_env(),
                                  capture_output=True, text=True, check=False).stdout
            fh.write(diff + "\n")
    (work / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(f"== {module}: {counts} in {time.monotonic() - t0:.0f} s; survivors in {work / 'survivors.txt'}",
          flush=True)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all listed)")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--resume", action="store_true", help="keep earlier results (default: start afresh)")
    args = parser.parse_args()
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module}: {' '.join(tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"mutants: unknown module {unknown[0]} (known: {', '.join(MODULES)})", file=sys.stderr)
        return 2
    if not MUTMUT.exists():
        print("mutants: mutmut is not installed; pip install -e '.[mutants]'", file=sys.stderr)
        return 2
    summary = {m: run_module(m, not args.resume) for m in (args.modules or MODULES)}
    print("\nmodule                       killed  survived  other  kill rate")
    for module, counts in summary.items():
        if not counts:
            continue
        killed = counts.get("killed", 0)
        survived = counts.get("survived", 0)
        other = sum(v for k, v in counts.items() if k not in ("killed", "survived"))
        total = killed + survived + other
        print(f"{module:28} {killed:6} {survived:9} {other:6}  {killed / max(total, 1):8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
