-- description: Loss trajectories of ok matches (one row per pair; the loss logged every log_every steps).
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- param: limit = 200 | at most this many pairs
SELECT m.model, m.weights, m.embed, coalesce(s.setting, m.config_hash) AS setting,
       m.pair_id, m.success, m.steps, m.log_every, m.loss_trajectory,
       m.config_hash, m.unit_id, m.run_id
FROM match_ok($run_id, $model, $weights, $config_hash) AS m
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
WHERE m.loss_trajectory IS NOT NULL
ORDER BY m.model, m.weights, m.embed, setting, m.config_hash, m.run_id, m.unit_id, m.pair_id
LIMIT CAST($limit AS BIGINT)
