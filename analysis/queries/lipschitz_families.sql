-- description: Lipschitz estimates per direction family (random, top, match, null): quantiles of the per-direction estimate.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- A direction's estimate is l_jvp, or l_fd at its smallest h where l_jvp is missing.
WITH directions AS (
    SELECT run_id, unit_id, pair_id, model, weights, family, direction,
           coalesce(max(l_jvp), arg_min(l_fd, h)) AS estimate
    FROM lipschitz
    WHERE status = 'ok'
      AND ($run_id IS NULL OR run_id = $run_id)
      AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights)
    GROUP BY ALL
)
SELECT model, weights, family,
       count(*) AS n_directions,
       min(estimate) AS min_estimate,
       quantile_cont(estimate, 0.25) AS p25_estimate,
       median(estimate) AS median_estimate,
       quantile_cont(estimate, 0.75) AS p75_estimate,
       max(estimate) AS max_estimate
FROM directions
GROUP BY model, weights, family
ORDER BY model, weights, family
