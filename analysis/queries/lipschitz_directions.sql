-- description: One Lipschitz estimate per direction (for plots): family, direction and its estimate.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- param: family = NULL | only this family: random, top, grad, match, null or off_top (NULL: all)
-- A direction's estimate is l_jvp, or l_fd at its smallest h where l_jvp is missing.
SELECT d.model, d.weights, d.embed, coalesce(s.setting, d.config_hash) AS setting,
       d.family, d.pair_id, d.direction, d.estimate, d.sigma, d.config_hash, d.unit_id, d.run_id
FROM lipschitz_estimates($run_id, $model, $weights, $config_hash) AS d
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
WHERE $family IS NULL OR d.family = $family
ORDER BY d.model, d.weights, d.embed, setting, d.config_hash, d.family, d.run_id, d.unit_id,
         d.pair_id, d.direction
