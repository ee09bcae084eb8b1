-- Runs page: pairs whose probe or decoding failed, counted by table, model and error message
-- (the $limit most frequent). One branch per result table (sweep.schema.RESULT_TABLES).
SELECT probe, model, error, count(*) AS rows
FROM (SELECT 'match' AS probe, model, error FROM match WHERE status = 'error'
      UNION ALL SELECT 'perturb' AS probe, model, error FROM perturb WHERE status = 'error'
      UNION ALL SELECT 'lipschitz' AS probe, model, error FROM lipschitz WHERE status = 'error')
GROUP BY ALL ORDER BY rows DESC, probe, model LIMIT $limit
