-- description: Claim 1 (equivalence): match success rate, steps, final rel_dist and cos per model, weights, embedding point and match setting.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- Metrics count rows with status 'ok' only; n_error counts the rest. One row per setting
-- (config_hash); `setting` names its parameters (those that differ between settings).
WITH grouped AS (
    SELECT model, weights, embed, config_hash,
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
           avg(cos) FILTER (WHERE status = 'ok') AS mean_cos,
           any_value(params) AS params
    FROM match_rows($run_id, $model, $weights, $config_hash)
    GROUP BY model, weights, embed, config_hash
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash
