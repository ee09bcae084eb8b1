-- description: Claim 1 (equivalence): match success rate, steps, final rel_dist and cos per model and weights.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- Metrics count rows with status 'ok' only; n_error counts the rest.
SELECT model, weights,
       count(*) FILTER (WHERE status = 'ok') AS n_ok,
       count(*) FILTER (WHERE status = 'error') AS n_error,
       count(*) FILTER (WHERE status = 'ok' AND success) AS n_success,
       avg(success::DOUBLE) FILTER (WHERE status = 'ok') AS success_rate,
       avg(steps) FILTER (WHERE status = 'ok') AS mean_steps,
       median(steps) FILTER (WHERE status = 'ok' AND success) AS median_steps_success,
       max(steps) FILTER (WHERE status = 'ok') AS max_steps,
       median(rel_dist) FILTER (WHERE status = 'ok') AS median_rel_dist,
       avg(rel_dist) FILTER (WHERE status = 'ok') AS mean_rel_dist,
       median(rel_dist_start) FILTER (WHERE status = 'ok') AS median_rel_dist_start,
       median(cos) FILTER (WHERE status = 'ok') AS median_cos,
       avg(cos) FILTER (WHERE status = 'ok') AS mean_cos
FROM match
WHERE ($run_id IS NULL OR run_id = $run_id)
  AND ($model IS NULL OR model = $model)
  AND ($weights IS NULL OR weights = $weights)
GROUP BY model, weights
ORDER BY model, weights
