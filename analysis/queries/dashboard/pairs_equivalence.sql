-- Pairs page: one row per equivalence pair of the models in $models whose pair or unit id
-- contains $search (lower case; NULL: all), by $outcome: all | success | failure (the pair's
-- match) | error.
SELECT run_id, unit_id, pair_id, model, weights, coalesce(s.setting, t.config_hash) AS setting,
       status, match_success, path_target_max, path_linear_max, walk_radius, random_walk_radius, walk_ratio,
       error
FROM equivalence AS t
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'equivalence') AS s USING (config_hash)
WHERE list_contains($models, model)
  AND ($search IS NULL OR contains(lower(pair_id), $search) OR contains(lower(unit_id), $search))
  AND ($outcome NOT IN ('error', 'success', 'failure')
       OR ($outcome = 'error' AND status = 'error')
       OR ($outcome = 'success' AND status = 'ok' AND match_success)
       OR ($outcome = 'failure' AND status = 'ok' AND NOT coalesce(match_success, false)))
