-- Pairs page: one row per lipschitz pair (its directions and step sizes) of the models in $models
-- whose pair or unit id contains $search (lower case; NULL: all), by $outcome: all | error
-- (success and failure: ok rows).
SELECT run_id, unit_id, pair_id, model, weights, coalesce(s.setting, t.config_hash) AS setting,
       status, count(*) AS n_estimates, max(l_jvp) AS max_l_jvp, min(l_jvp) AS min_l_jvp,
       any_value(error) AS error
FROM lipschitz AS t
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
WHERE list_contains($models, model)
  AND ($search IS NULL OR contains(lower(pair_id), $search) OR contains(lower(unit_id), $search))
  AND ($outcome NOT IN ('error', 'success', 'failure')
       OR ($outcome = 'error' AND status = 'error')
       OR ($outcome IN ('success', 'failure') AND status = 'ok'))
GROUP BY ALL
