-- description: Claim 3 per pair: sigma1 over the median random-direction estimate, top versus null, match versus random.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- A direction's estimate is l_jvp, or l_fd at its smallest h where l_jvp is missing.
-- sigma1 is the largest `top` sigma (or `top` estimate where sigma is missing).
WITH directions AS (
    SELECT run_id, unit_id, pair_id, model, weights, family, direction,
           coalesce(max(l_jvp), arg_min(l_fd, h)) AS estimate,
           max(sigma) AS sigma
    FROM lipschitz
    WHERE status = 'ok'
      AND ($run_id IS NULL OR run_id = $run_id)
      AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights)
    GROUP BY ALL
),
per_pair AS (
    SELECT run_id, unit_id, pair_id, model, weights,
           coalesce(max(sigma) FILTER (WHERE family = 'top'),
                    max(estimate) FILTER (WHERE family = 'top')) AS sigma1,
           median(estimate) FILTER (WHERE family = 'random') AS median_random,
           median(estimate) FILTER (WHERE family = 'top') AS median_top,
           median(estimate) FILTER (WHERE family = 'null') AS median_null,
           median(estimate) FILTER (WHERE family = 'match') AS median_match,
           count(*) FILTER (WHERE family = 'random') AS n_random,
           count(*) FILTER (WHERE family = 'top') AS n_top,
           count(*) FILTER (WHERE family = 'null') AS n_null
    FROM directions
    GROUP BY run_id, unit_id, pair_id, model, weights
)
SELECT model, weights, pair_id, sigma1, median_random,
       sigma1 / nullif(median_random, 0) AS sigma1_over_random,
       median_top, median_null,
       median_top / nullif(median_null, 0) AS top_over_null,
       median_match,
       median_match / nullif(median_random, 0) AS match_over_random,
       n_top, n_random, n_null, unit_id, run_id
FROM per_pair
ORDER BY model, weights, run_id, unit_id, pair_id
