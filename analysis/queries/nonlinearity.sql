-- description: Nonlinearity |l_fd - l_jvp| / l_jvp against the step size h, per direction family.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- Near 0 for small h means the embedding is locally linear along that family's directions.
SELECT model, weights, family, h,
       count(*) AS n,
       median(nonlinearity) AS median_nonlinearity,
       avg(nonlinearity) AS mean_nonlinearity,
       max(nonlinearity) AS max_nonlinearity,
       median(l_fd) AS median_l_fd
FROM lipschitz
WHERE status = 'ok'
  AND ($run_id IS NULL OR run_id = $run_id)
  AND ($model IS NULL OR model = $model)
  AND ($weights IS NULL OR weights = $weights)
GROUP BY model, weights, family, h
ORDER BY model, weights, family, h
