"""Mutation testing of the core modules with mutmut, one module at a time (`make mutants`).

For each module below, mutmut gets a scratch directory `.mutants/<module>/` holding links to the
project and a `[tool.mutmut]` section that mutates only that module and runs only that module's
fast tests (mutmut further narrows each mutant to the tests that execute the mutated function).
At the end it prints, per module, how many mutants were killed, survived or timed out, and
writes the survivors' diffs to `.mutants/<module>/survivors.txt` for review.

    python tools/mutants.py                          # every module (hours on a small machine)
    python tools/mutants.py sweep/run/store.py       # one module
    python tools/mutants.py --list                   # the modules and their tests

It runs at low priority (`nice -n 19`) with one test process unless `--children N` asks for more
(mutmut's `--max-children`), so a shared machine stays usable. Not part of CI. Results and
judgements of equivalent mutants: TESTING.md.
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

_LABELS_PASS = [f"tests/finished/test_labels.py::{name}" for name in (
    "test_units_hold_two_pairs_and_store_fp16_embeddings_of_their_images",
    "test_knn_labels_equal_a_brute_force_knn_over_the_whole_run",
    "test_views_show_the_labels_and_a_rerun_replaces_them",
    "test_a_reference_bank_is_used_instead_of_the_run",
    "test_labels_of_a_run_without_finished_units_is_a_user_error",
    "test_the_worker_no_longer_labels_rows_itself",
    "test_the_summary_and_the_note_say_what_was_labelled",
    "test_units_without_stored_embeddings_get_no_labels_and_lose_stale_ones",
    "test_a_missing_reference_bank_is_a_user_error_naming_knn_bank",
    "test_each_reference_set_has_its_own_cached_embeddings",
    "test_describe_gives_one_line_per_setting_with_its_head")]

# module -> its fast tests (no Ray, no browser)
MODULES: dict[str, list[str]] = {
    # store: its own tests and the store-level crash tests (the worker-level ones run a whole
    # unit per test, too slow to repeat per mutant; they count for worker.py)
    "sweep/run/store.py": ["tests/run/test_store.py"] + [
        f"tests/run/test_store_crash.py::{name}" for name in (
            "test_a_failed_rewrite_keeps_the_good_file",
            "test_temporary_names_are_hidden_siblings_that_never_end_in_parquet",
            "test_a_killed_writer_leaves_only_a_hidden_temp_file",
            "test_write_text_is_atomic_and_leaves_no_temp",
            "test_a_write_failing_before_any_byte_raises_its_own_error")],
    "analysis/guard.py": ["tests/analysis/test_guard.py", "tests/commands/test_query.py"],
    "analysis/named.py": ["tests/analysis/test_named.py", "tests/analysis/test_named_answers.py"],
    # worker: tests that run a unit on the linear encoder with 2-5 pairs (seconds each), the
    # worker-level crash tests, and the labels pass (it reads what the unit stored); not the
    # labels command test, which starts `vitsweep labels` five times
    "sweep/run/worker.py": ["tests/run/test_worker_parts.py", "tests/run/test_worker.py"] + [
        f"tests/run/test_store_crash.py::{name}" for name in (
            "test_a_failed_table_write_leaves_the_unit_not_done",
            "test_the_done_marker_is_the_last_file_written",
            "test_a_good_unit_survives_a_failed_rewrite")] + _LABELS_PASS + [
        "tests/run/test_worker_fencing.py::test_commit_moves_staged_files_in_order"],  # commit=False: staged files
    # the run-wide k-NN labels pass
    "sweep/finished/labels.py": _LABELS_PASS + ["tests/run/test_worker.py::test_gallery_and_knn_columns"],
    "sweep/probes/base.py": ["tests/probes/test_base_contract.py", "tests/probes/test_base.py"],
    "sweep/probes/metrics.py": ["tests/probes/test_base_contract.py", "tests/probes/test_metrics.py"],
    # match, loop, common, labels: the linear-encoder oracles, not test_probe_match.py's ViT runs
    # (minutes per mutant on a small machine); those still run in `make test`
    "sweep/probes/match.py": ["tests/probes/test_match_oracle.py",
                              "tests/probes/test_base_contract.py::test_match_8bit_recheck_is_judged_on_the_rounded_image",
                              "tests/probes/test_match.py::test_bad_parameters_are_refused",
                              "tests/probes/test_match.py::test_paper_preset_runs_in_fp32_unless_told_otherwise",
                              "tests/planning/test_plan_passes.py"],
    "sweep/probes/perturb.py": ["tests/probes/test_perturb.py", "tests/planning/test_plan_passes.py"],
    "sweep/probes/geometry.py": ["tests/probes/test_perturb.py", "tests/probes/test_match_oracle.py"],
    # lipschitz and its row queues: the micro-ViT reference tests first (seconds), then the
    # linear-encoder closed forms and the tiny-ViT gap test
    "sweep/probes/lipschitz.py": ["tests/probes/test_lipschitz_batched.py", "tests/probes/test_rows.py",
                                  "tests/probes/test_lipschitz.py", "tests/planning/test_plan_passes.py"],
    "sweep/probes/rows.py": ["tests/probes/test_rows.py", "tests/probes/test_lipschitz_batched.py"],
    # labels: k-NN and head top-1 here; the run-wide labels pass tests count for sweep/finished/labels.py
    "sweep/probes/labels.py": ["tests/probes/test_labels_knn.py", "tests/probes/test_labels.py", "tests/probes/test_common.py"],
    "sweep/probes/loop.py": ["tests/probes/test_loop.py", "tests/probes/test_match_oracle.py"],
    "sweep/probes/common.py": ["tests/probes/test_common.py", "tests/probes/test_match_oracle.py"],
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


def run_module(module: str, fresh: bool, children: int = 1) -> dict[str, int]:
    tests = [t for t in MODULES[module] if (REPO / t.split("::")[0]).exists()]
    if not tests:
        print(f"{module}: none of its tests exist ({', '.join(MODULES[module])}); skipped")
        return {}
    work = _prepare(module, tests, fresh)
    print(f"== {module}: tests {' '.join(tests)}", flush=True)
    t0 = time.monotonic()
    subprocess.run(["nice", "-n", "19", str(MUTMUT), "run", "--max-children", str(children)], cwd=work,
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
    parser.add_argument("--children", type=int, default=1, metavar="N",
                        help="test processes at once (default 1; each at nice 19, so more only take idle CPU)")
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
    if args.children < 1:
        print(f"mutants: --children must be at least 1, got {args.children}", file=sys.stderr)
        return 2
    summary = {m: run_module(m, not args.resume, args.children) for m in (args.modules or MODULES)}
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
