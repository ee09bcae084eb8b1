-- description: Lipschitz estimates per direction family (random, top, grad, match, null, off_top) and lipschitz setting: quantiles of the per-direction estimate.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- A direction's estimate is l_jvp, or l_fd at its smallest h where l_jvp is missing.
-- One row per model, weights, embedding point, setting (config_hash) and family.
WITH grouped AS (
    SELECT model, weights, embed, config_hash, family,
           count(*) AS n_directions,
           min(estimate) AS min_estimate,
           quantile_cont(estimate, 0.25) AS p25_estimate,
           median(estimate) AS median_estimate,
           quantile_cont(estimate, 0.75) AS p75_estimate,
           max(estimate) AS max_estimate,
           any_value(params) AS params
    FROM lipschitz_estimates($run_id, $model, $weights, $config_hash)
    GROUP BY model, weights, embed, config_hash, family
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash, g.family
