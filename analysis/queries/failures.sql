-- description: Failures: failed work units and pairs in error, with their messages.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: probe = NULL | only this probe (NULL: all probes)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- A pair in error appears once per distinct message (perturb writes one row per eps).
WITH unit_configs AS (
    SELECT run_id, unit_id, any_value(weights) AS weights, any_value(config_hash) AS config_hash
    FROM (SELECT DISTINCT run_id, unit_id, weights, config_hash FROM units
          UNION SELECT DISTINCT run_id, unit_id, weights, config_hash FROM match
          UNION SELECT DISTINCT run_id, unit_id, weights, config_hash FROM perturb
          UNION SELECT DISTINCT run_id, unit_id, weights, config_hash FROM lipschitz)
    GROUP BY run_id, unit_id
),
failed AS (
    SELECT 'unit' AS kind, run_id, model, weights, probe, config_hash, unit_id,
           NULL::VARCHAR AS pair_id, NULL::VARCHAR AS src_key, NULL::VARCHAR AS tgt_key, error
    FROM units WHERE status = 'error'
    UNION
    SELECT 'pair', run_id, model, weights, probe, config_hash, unit_id, pair_id, src_key, tgt_key, error
    FROM (SELECT run_id, model, weights, probe, config_hash, unit_id, pair_id, src_key, tgt_key, error, status FROM match
          UNION ALL SELECT run_id, model, weights, probe, config_hash, unit_id, pair_id, src_key, tgt_key, error, status FROM perturb
          UNION ALL SELECT run_id, model, weights, probe, config_hash, unit_id, pair_id, src_key, tgt_key, error, status FROM lipschitz)
    WHERE status = 'error'
    UNION
    SELECT 'pair', p.run_id, p.model, w.weights, p.probe, w.config_hash, p.unit_id, p.pair_id,
           p.src_key, p.tgt_key, p.error
    FROM pairs AS p LEFT JOIN unit_configs AS w USING (run_id, unit_id)
    WHERE p.status = 'error'
)
SELECT f.kind, f.model, f.weights, f.probe, coalesce(s.setting, f.config_hash) AS setting,
       f.unit_id, f.pair_id, f.src_key, f.tgt_key, f.error, f.config_hash, f.run_id
FROM failed AS f
LEFT JOIN (SELECT probe, config_hash, setting FROM settings) AS s USING (probe, config_hash)
WHERE ($run_id IS NULL OR f.run_id = $run_id)
  AND ($model IS NULL OR f.model = $model)
  AND ($weights IS NULL OR f.weights = $weights)
  AND ($probe IS NULL OR f.probe = $probe)
  AND ($config_hash IS NULL OR f.config_hash = $config_hash)
ORDER BY f.kind DESC, f.model, f.weights, f.probe, setting, f.unit_id, f.pair_id, f.error
