-- Pairs page: one row per perturb pair (its rows over ε) of the models in $models whose pair or
-- unit id contains $search (lower case; NULL: all), by $outcome: all | error (success and
-- failure: ok rows).
SELECT run_id, unit_id, pair_id, model, weights, coalesce(s.setting, t.config_hash) AS setting,
       status, count(*) AS n_eps, max(disp_over_pair) AS max_disp_over_pair,
       max(random_disp_over_pair) AS max_random_disp_over_pair, any_value(error) AS error
FROM perturb AS t
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'perturb') AS s USING (config_hash)
WHERE list_contains($models, model)
  AND ($search IS NULL OR contains(lower(pair_id), $search) OR contains(lower(unit_id), $search))
  AND ($outcome NOT IN ('error', 'success', 'failure')
       OR ($outcome = 'error' AND status = 'error')
       OR ($outcome IN ('success', 'failure') AND status = 'ok'))
GROUP BY ALL
