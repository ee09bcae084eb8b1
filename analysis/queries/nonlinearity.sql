-- description: Nonlinearity |l_fd - l_jvp| / l_jvp against the step size h, per direction family and lipschitz setting: a curvature scale, with the rows it is undefined on and the rows resolved to zero counted.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- Nonlinearity grows as O(h) for every smooth function: it is a curvature scale along that
-- family's directions, not a test of linearity ("near 0 at small h" holds for any smooth map).
-- It is undefined where l_jvp is at or below J v's round-off (`jvp_floor`, 2^-26 sigma_1; for
-- runs without the column, 2^-26 times the pair's largest l_jvp): the `null` family, whose
-- ratio would be curvature over round-off. Those rows are n_undefined and left out. A defined
-- row whose |l_fd - l_jvp| is within its round-off floor (fd_floor; nonlinearity NULL) is
-- resolved to zero: counted as 0 (n_resolved_zero). n_resolved = the rows the aggregates are
-- over (defined rows, zeros included).
-- One row per model, weights, embedding point, setting (config_hash), family and h.
WITH rows AS (
    SELECT *, l_jvp > coalesce(jvp_floor, 2.0 ^ -26 * max(l_jvp) OVER (
                                   PARTITION BY run_id, unit_id, pair_id)) AS defined
    FROM lipschitz_ok($run_id, $model, $weights, $config_hash)
    WHERE h IS NOT NULL AND fd_residual IS NULL  -- the h grid (the match path's own step: claims)
),
grouped AS (
    SELECT model, weights, embed, config_hash, family, h,
           count(*) AS n,
           count(*) FILTER (WHERE defined) AS n_resolved,
           count(*) FILTER (WHERE defined AND nonlinearity IS NULL) AS n_resolved_zero,
           count(*) FILTER (WHERE defined IS NOT TRUE) AS n_undefined,
           median(coalesce(nonlinearity, 0.0)) FILTER (WHERE defined) AS median_nonlinearity,
           avg(coalesce(nonlinearity, 0.0)) FILTER (WHERE defined) AS mean_nonlinearity,
           max(coalesce(nonlinearity, 0.0)) FILTER (WHERE defined) AS max_nonlinearity,
           median(l_fd) AS median_l_fd,
           any_value(params) AS params
    FROM rows
    GROUP BY model, weights, embed, config_hash, family, h
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash, g.family, g.h
