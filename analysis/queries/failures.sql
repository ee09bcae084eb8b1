-- description: Failures: failed work units and pairs in error, with their messages.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: probe = NULL | only this probe (NULL: all probes)
-- A pair in error appears once per distinct message (perturb writes one row per eps).
WITH unit_weights AS (
    SELECT DISTINCT run_id, unit_id, weights FROM units
    UNION SELECT DISTINCT run_id, unit_id, weights FROM match
    UNION SELECT DISTINCT run_id, unit_id, weights FROM perturb
    UNION SELECT DISTINCT run_id, unit_id, weights FROM lipschitz
),
failed AS (
    SELECT 'unit' AS kind, run_id, model, weights, probe, unit_id, NULL::VARCHAR AS pair_id,
           NULL::VARCHAR AS src_key, NULL::VARCHAR AS tgt_key, error
    FROM units WHERE status = 'error'
    UNION
    SELECT 'pair', run_id, model, weights, probe, unit_id, pair_id, src_key, tgt_key, error
    FROM (SELECT run_id, model, weights, probe, unit_id, pair_id, src_key, tgt_key, error, status FROM match
          UNION ALL SELECT run_id, model, weights, probe, unit_id, pair_id, src_key, tgt_key, error, status FROM perturb
          UNION ALL SELECT run_id, model, weights, probe, unit_id, pair_id, src_key, tgt_key, error, status FROM lipschitz)
    WHERE status = 'error'
    UNION
    SELECT 'pair', p.run_id, p.model, w.weights, p.probe, p.unit_id, p.pair_id, p.src_key, p.tgt_key, p.error
    FROM pairs AS p LEFT JOIN unit_weights AS w USING (run_id, unit_id)
    WHERE p.status = 'error'
)
SELECT kind, model, weights, probe, unit_id, pair_id, src_key, tgt_key, error, run_id
FROM failed
WHERE ($run_id IS NULL OR run_id = $run_id)
  AND ($model IS NULL OR model = $model)
  AND ($weights IS NULL OR weights = $weights)
  AND ($probe IS NULL OR probe = $probe)
ORDER BY kind DESC, model, weights, probe, unit_id, pair_id, error
