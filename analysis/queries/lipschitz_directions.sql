-- description: One Lipschitz estimate per direction (for plots): family, direction and its estimate.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: family = NULL | only this family: random, top, match or null (NULL: all)
-- A direction's estimate is l_jvp, or l_fd at its smallest h where l_jvp is missing.
SELECT model, weights, family, pair_id, direction,
       coalesce(max(l_jvp), arg_min(l_fd, h)) AS estimate,
       max(sigma) AS sigma,
       unit_id, run_id
FROM lipschitz
WHERE status = 'ok'
  AND ($run_id IS NULL OR run_id = $run_id)
  AND ($model IS NULL OR model = $model)
  AND ($weights IS NULL OR weights = $weights)
  AND ($family IS NULL OR family = $family)
GROUP BY model, weights, family, pair_id, direction, unit_id, run_id
ORDER BY model, weights, family, run_id, unit_id, pair_id, direction
