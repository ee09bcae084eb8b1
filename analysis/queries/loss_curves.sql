-- description: Loss trajectories of ok matches (one row per pair; the loss logged every log_every steps).
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: limit = 200 | at most this many pairs
SELECT model, weights, pair_id, success, steps, log_every, loss_trajectory, unit_id, run_id
FROM match
WHERE status = 'ok' AND loss_trajectory IS NOT NULL
  AND ($run_id IS NULL OR run_id = $run_id)
  AND ($model IS NULL OR model = $model)
  AND ($weights IS NULL OR weights = $weights)
ORDER BY model, weights, run_id, unit_id, pair_id
LIMIT CAST($limit AS BIGINT)
