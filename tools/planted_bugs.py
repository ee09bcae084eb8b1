"""Plant known one-line bugs one at a time and check that the named test fails on each.

Each entry: (id, file, old text, new text, tests that must fail). The bug is written into the
file, the tests run (fast ones, no Ray unless named), and the file is restored whatever happens.

    python tools/planted_bugs.py            # all
    python tools/planted_bugs.py S1 W2      # some

A bug that no test catches is reported as SURVIVED and the script exits 1. TESTING.md lists
the bugs and which test kills each. The bugs are written into the working tree: do not commit
while it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUGS: list[tuple[str, str, str, str, list[str]]] = [
    # ---- store / worker crash order
    ("S1", "sweep/run/store.py", "            pq.write_table(table, tmp)\n            os.replace(tmp, final)",
     "            pq.write_table(table, final)", ["tests/run/test_store_crash.py"]),
    ("S2", "sweep/run/store.py", "{uuid.uuid4().hex[:12]}{TMP_SUFFIX}", "{uuid.uuid4().hex[:12]}.parquet",
     ["tests/run/test_store_crash.py::test_temporary_names_are_hidden_siblings_that_never_end_in_parquet"]),
    ("S3", "sweep/run/store.py", "            Path(tmp).unlink(missing_ok=True)\n", "            pass\n",
     ["tests/run/test_store_crash.py::test_a_failed_rewrite_keeps_the_good_file"]),
    ("S4", "sweep/run/store.py",
     'names = [n for n in tables if n != "units"] + (["units"] if "units" in tables else [])',
     'names = list(tables)',
     ["tests/run/test_store.py::test_unit_tables_land_in_partitions_units_last"]),
    ("W1", "sweep/run/worker.py",  # a done-marker written (by a separate call) before the result tables
     '    staged = store.write_unit_tables(unit.probe, unit.model, unit.unit_id, out, stage=stage)\n',
     '    store.write_unit_tables(unit.probe, unit.model, unit.unit_id, {"units": to_table("units", [units_row(\n'
     '        unit, run_id, UnitSummary(unit.unit_id, STATUS_OK, attempts=attempt), started_at, started_at)])}, stage=stage)\n'
     '    staged = store.write_unit_tables(unit.probe, unit.model, unit.unit_id, out, stage=stage)\n',
     ["tests/run/test_store_crash.py::test_a_failed_table_write_leaves_the_unit_not_done"]),
    ("W2", "sweep/run/worker.py", '        "attempts": summary.attempts,', '        "attempts": 1,',
     ["tests/run/test_worker.py::test_rerun_overwrites_its_own_files"]),
    ("W3", "sweep/run/worker.py", "self._cache.popitem(last=False)", "self._cache.popitem(last=True)",
     ["tests/run/test_worker_parts.py::test_encoder_cache_keeps_the_most_recently_used"]),
    ("W4", "sweep/run/worker.py", "            self._cache.move_to_end(key)\n", "",
     ["tests/run/test_worker_parts.py::test_encoder_cache_keeps_the_most_recently_used"]),
    ("W5", "sweep/run/worker.py", '    if pair.error is not None:\n        return pair.error\n', "",
     ["tests/run/test_worker_parts.py::test_which_error_a_pair_reports"]),
    ("W6", "sweep/run/worker.py", "datetime.now(timezone.utc), time.perf_counter()", "datetime.now(), time.perf_counter()",
     ["tests/run/test_worker.py::test_a_unit_uses_the_cached_encoder_and_stamps_utc_times_and_its_worker"]),
    # ---- k-NN labels: the vote and the labels pass
    ("K1", "sweep/probes/labels.py", "    if exclude_index is not None:\n        rows", "    if False:\n        rows",
     ["tests/run/test_worker.py::test_knn_never_votes_with_the_pairs_own_images"]),
    ("K2", "sweep/finished/labels.py", "            exclude[q, j] = position.get(key, -1)", "            pass",
     ["tests/run/test_worker.py::test_gallery_and_knn_columns"]),
    ("K3", "sweep/finished/banks.py", "json.dumps([model, weights, embed, urls])", "json.dumps([model, weights, embed])",
     ["tests/finished/test_labels.py::test_each_reference_set_has_its_own_cached_embeddings"]),
    # ---- the report states the named queries' numbers (checked against hand-worked numbers)
    ("R1", "analysis/queries/overgeneralisation.sql",
     "avg((pred_adv = pred_tgt)::DOUBLE) FILTER (WHERE head_differ) AS head_target_rate_all",
     "avg((pred_adv = pred_tgt)::DOUBLE) FILTER (WHERE success AND head_differ) AS head_target_rate_all",
     ["tests/analysis/test_report.py::test_numbers_equal_the_named_queries"]),
    ("R2", "analysis/queries/normal_space.sql", "median(random_disp_over_pair) AS median_random_disp_over_pair",
     "min(random_disp_over_pair) AS median_random_disp_over_pair",
     ["tests/analysis/test_report.py::test_numbers_equal_the_named_queries"]),
    # ---- named queries and their loader
    ("Q1", "analysis/queries/normal_space.sql", "median(disp_over_pair) AS median_disp_over_pair",
     "avg(disp_over_pair) AS median_disp_over_pair", ["tests/analysis/test_named_answers.py::test_normal_space"]),
    ("Q2", "analysis/queries/lipschitz_families.sql", "median(estimate) AS median_estimate",
     "avg(estimate) AS median_estimate", ["tests/analysis/test_named_answers.py::test_lipschitz_families"]),
    ("Q3", "analysis/queries/invisibility.sql", "    WHERE success\n", "\n",
     ["tests/analysis/test_named_answers.py::test_invisibility_counts_successes_only"]),
    ("Q4", "analysis/queries/equivalence.sql", "median(steps) FILTER (WHERE status = 'ok' AND success)",
     "median(steps) FILTER (WHERE status = 'ok')", ["tests/analysis/test_named_answers.py::test_equivalence"]),
    ("Q5", "analysis/named.py", 'value.upper() == "NULL"', 'value == "NULL"',
     ["tests/analysis/test_named_answers.py::test_null_in_any_case_or_empty_means_all"]),
    ("Q6", "analysis/db.py", "arg_min(l_fd, h)", "arg_max(l_fd, h)",
     ["tests/analysis/test_named_answers.py::test_lipschitz_pairs"]),
    ("Q7", "analysis/queries/overgeneralisation.sql",
     "avg((knn_adv = knn_tgt)::DOUBLE) FILTER (WHERE success AND knn_differ) AS knn_target_rate_success",
     "avg(coalesce(knn_adv = knn_tgt, false)::DOUBLE) FILTER (WHERE success AND knn_differ) AS knn_target_rate_success",
     ["tests/analysis/test_named_answers.py::test_overgeneralisation_shares"]),
    ("Q8", "analysis/queries/normal_space.sql", "quantile_cont(disp_over_pair, 0.1)",
     "quantile_disc(disp_over_pair, 0.1)", ["tests/analysis/test_named_answers.py::test_normal_space"]),
    ("Q9", "analysis/queries/overview.sql", "count(*) FILTER (WHERE u.status IS NULL) AS units_in_progress",
     "count(*) FILTER (WHERE u.status <> 'ok') AS units_in_progress", ["tests/analysis/test_named_answers.py::test_overview"]),
    ("Q10", "analysis/queries/failures.sql", "ORDER BY f.kind DESC", "ORDER BY f.kind",
     ["tests/analysis/test_named_answers.py::test_failures"]),
    # ---- probe contract, metrics, 8-bit re-check, embedding points
    ("C1", "sweep/probes/base.py", " or image.min() < 0 or image.max() > 1:", ":",
     ["tests/probes/test_base_contract.py::test_inputs_outside_the_contract_become_error_results"]),
    ("C2", "sweep/probes/base.py", "isinstance(value, float) and math.isnan(value)", "False",
     ["tests/probes/test_base_contract.py::test_a_nan_metric_turns_the_pair_into_an_error"]),
    ("C3", "sweep/probes/base.py", "not bool(torch.isfinite(image).all()) or ", "",
     ["tests/probes/test_base_contract.py::test_inputs_outside_the_contract_become_error_results"]),
    ("C4", "sweep/probes/match.py", "e_q = embed_fp32(self.enc, quantize_8bit(x_pix))", "e_q = embed_fp32(self.enc, x_pix)",
     ["tests/probes/test_base_contract.py::test_match_8bit_recheck_is_judged_on_the_rounded_image"]),
    ("C5", "sweep/probes/match.py", "q_success = self.criterion(q_sq, q_cos, q_rel)", "q_success = success",
     ["tests/probes/test_base_contract.py::test_match_8bit_recheck_is_judged_on_the_rounded_image"]),
    ("C6", "sweep/probes/metrics.py", 'peak_signal_noise_ratio(x, x0, data_range=1.0,', 'peak_signal_noise_ratio(x, x0, data_range=2.0,',
     ["tests/probes/test_base_contract.py::test_pixel_change_against_independent_psnr_and_ssim"]),
    ("C7", "sweep/probes/metrics.py", "sigma=1.5 * kernel / 11", "sigma=1.5",
     ["tests/probes/test_base_contract.py::test_pixel_change_against_independent_psnr_and_ssim"]),
    ("E1", "sweep/encoders/timm_models.py", "        return spatial.mean(dim=1)", "        return spatial[:, 0]",
     ["tests/encoders/test_points.py"]),
    ("E2", "sweep/encoders/timm_models.py", "return_prefix_tokens=True, norm=False,", "return_prefix_tokens=True, norm=True,",
     ["tests/encoders/test_points.py"]),
    ("E3", "sweep/encoders/timm_models.py", "x, indices=[block], return_prefix_tokens", "x, indices=[max(block - 1, 0)], return_prefix_tokens",
     ["tests/encoders/test_points.py"]),
    # ---- driver failure paths (real local Ray; slow)
    ("D1", "sweep/run/distribute.py", "retry=not isinstance(cause, UserError)", "retry=True",
     ["tests/e2e/test_distribute_failures.py::test_user_error_is_never_retried_other_errors_are"]),
    ("D2", "sweep/run/distribute.py", "if self.replacements > ACTOR_MAX_RESTARTS * self.n_actors:",
     "if self.replacements > 2 * ACTOR_MAX_RESTARTS * self.n_actors:",
     ["tests/e2e/test_distribute_failures.py::test_actors_that_keep_dying_are_replaced_only_so_often"]),
    ("D3", "sweep/run/distribute.py", "            if any(s.alive for s in self.slots):\n",
     "            if True:\n", ["tests/e2e/test_distribute_failures.py::test_a_sweep_whose_actors_never_start_times_out"]),
    ("D4", "sweep/run/distribute.py", "self._retry_or_fail(unit, attempt, message, retry=not isinstance(cause, UserError))",
     "self._retry_or_fail(unit, attempt + 1, message, retry=not isinstance(cause, UserError))",
     ["tests/e2e/test_distribute_failures.py::test_user_error_is_never_retried_other_errors_are"]),
    # ---- the SQL console: an escape must be refused by the guard, not merely fail in DuckDB
    ("G1", "analysis/guard.py", '{"getenv", "current_setting",', '{"current_setting",',
     ["tests/dashboard/test_app.py::test_sql_console_refuses_escapes"]),
]


def run_bug(bug: tuple[str, str, str, str, list[str]]) -> bool:
    ident, rel, old, new, tests = bug
    path = REPO / rel
    original = path.read_text()
    if original.count(old) != 1:
        print(f"{ident}: the text to replace is not found exactly once in {rel} (code changed?)")
        return False
    try:
        path.write_text(original.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False)
    finally:
        path.write_text(original)
    caught = proc.returncode == 1
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    print(f"{ident}: {'killed' if caught else 'SURVIVED'} by {' '.join(tests)} ({last})", flush=True)
    return caught


def main() -> int:
    wanted = set(sys.argv[1:])
    bugs = [b for b in BUGS if not wanted or b[0] in wanted]
    results = [run_bug(b) for b in bugs]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
