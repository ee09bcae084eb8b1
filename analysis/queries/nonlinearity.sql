-- description: Nonlinearity |l_fd - l_jvp| / l_jvp against the step size h, per direction family and lipschitz setting.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- Near 0 for small h means the embedding is locally linear along that family's directions.
-- nonlinearity is NULL where |l_fd - l_jvp| is within the row's round-off floor (fd_floor):
-- n_resolved counts the rows above it; the aggregates are over those rows only.
-- One row per model, weights, embedding point, setting (config_hash), family and h.
WITH grouped AS (
    SELECT model, weights, embed, config_hash, family, h,
           count(*) AS n,
           count(nonlinearity) AS n_resolved,
           median(nonlinearity) AS median_nonlinearity,
           avg(nonlinearity) AS mean_nonlinearity,
           max(nonlinearity) AS max_nonlinearity,
           median(l_fd) AS median_l_fd,
           any_value(params) AS params
    FROM lipschitz_ok($run_id, $model, $weights, $config_hash)
    GROUP BY model, weights, embed, config_hash, family, h
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash, g.family, g.h
