-- Pairs page: one row per match pair of the models in $models whose pair or unit id contains
-- $search (lower case; NULL: all), by $outcome: all | error | success | failure (ok rows that
-- did not match). The page sorts and pages these rows.
SELECT run_id, unit_id, pair_id, model, weights, coalesce(s.setting, t.config_hash) AS setting,
       status, success, steps, rel_dist, cos, psnr, ssim, quant_success, error
FROM match AS t
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
WHERE list_contains($models, model)
  AND ($search IS NULL OR contains(lower(pair_id), $search) OR contains(lower(unit_id), $search))
  AND ($outcome NOT IN ('error', 'success', 'failure')
       OR ($outcome = 'error' AND status = 'error')
       OR ($outcome = 'success' AND status = 'ok' AND success)
       OR ($outcome = 'failure' AND status = 'ok' AND NOT success))
