-- description: Claim 3 (Lipschitz): sigma1 over the median random estimate (per pair, then aggregated), the top versus null (row space of J removed) gap, random versus null, grad and match versus random, per lipschitz setting.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- Per pair as in lipschitz_pairs; then median, geometric mean, min and max over pairs.
-- One row per model, weights, embedding point and setting (config_hash).
WITH per_pair AS (
    SELECT model, weights, embed, config_hash, any_value(params) AS params,
           coalesce(max(sigma) FILTER (WHERE family = 'top'),
                    max(estimate) FILTER (WHERE family = 'top'))
             / nullif(median(estimate) FILTER (WHERE family = 'random'), 0) AS sigma1_over_random,
           median(estimate) FILTER (WHERE family = 'top')
             / nullif(median(estimate) FILTER (WHERE family = 'null'), 0) AS top_over_null,
           median(estimate) FILTER (WHERE family = 'match')
             / nullif(median(estimate) FILTER (WHERE family = 'random'), 0) AS match_over_random,
           median(estimate) FILTER (WHERE family = 'grad')
             / nullif(median(estimate) FILTER (WHERE family = 'random'), 0) AS grad_over_random,
           median(estimate) FILTER (WHERE family = 'random')
             / nullif(median(estimate) FILTER (WHERE family = 'null'), 0) AS random_over_null
    FROM lipschitz_estimates($run_id, $model, $weights, $config_hash)
    GROUP BY run_id, unit_id, pair_id, model, weights, embed, config_hash
),
grouped AS (
    SELECT model, weights, embed, config_hash,
           count(*) AS n_pairs,
           median(sigma1_over_random) AS median_sigma1_over_random,
           exp(avg(ln(sigma1_over_random))) AS geomean_sigma1_over_random,
           min(sigma1_over_random) AS min_sigma1_over_random,
           max(sigma1_over_random) AS max_sigma1_over_random,
           median(top_over_null) AS median_top_over_null,
           min(top_over_null) AS min_top_over_null,
           median(match_over_random) AS median_match_over_random,
           median(grad_over_random) AS median_grad_over_random,
           median(random_over_null) AS median_random_over_null,
           any_value(params) AS params
    FROM per_pair
    GROUP BY model, weights, embed, config_hash
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash
