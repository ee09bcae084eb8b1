-- description: Run overview: work units by status and pairs ok/error, per model, weights, embedding point, probe and probe setting.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: probe = NULL | only this probe (NULL: all probes)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- A unit with result rows but no `units` row yet is counted as in progress.
WITH unit_counts AS (  -- each unit's keys and row counts (the view unit_rows: one pass over the rows)
    SELECT run_id, unit_id, model, weights, embed, probe, config_hash,
           coalesce(sum(rows) FILTER (WHERE status = 'ok'), 0) AS rows_ok,
           coalesce(sum(rows) FILTER (WHERE status = 'error'), 0) AS rows_error
    FROM unit_rows
    GROUP BY run_id, unit_id, model, weights, embed, probe, config_hash
),
result_units AS (
    SELECT run_id, unit_id, model, weights, embed, probe, config_hash FROM unit_counts
),
keys AS (
    SELECT run_id, unit_id, model, weights, embed, probe, config_hash FROM units
    UNION SELECT * FROM result_units
),
pair_counts AS (
    SELECT run_id, unit_id,
           count(*) FILTER (WHERE status = 'ok') AS pairs_ok,
           count(*) FILTER (WHERE status = 'error') AS pairs_error
    FROM pairs GROUP BY run_id, unit_id
),
row_counts AS (
    SELECT run_id, unit_id, sum(rows_ok) AS rows_ok, sum(rows_error) AS rows_error
    FROM unit_counts GROUP BY run_id, unit_id
),
grouped AS (
    SELECT k.model, k.weights, k.embed, k.probe, k.config_hash,
           count(*) AS units,
           count(*) FILTER (WHERE u.status = 'ok') AS units_ok,
           count(*) FILTER (WHERE u.status = 'error') AS units_error,
           count(*) FILTER (WHERE u.status IS NULL) AS units_in_progress,
           coalesce(sum(p.pairs_ok), 0)::BIGINT AS pairs_ok,
           coalesce(sum(p.pairs_error), 0)::BIGINT AS pairs_error,
           coalesce(sum(r.rows_ok), 0)::BIGINT AS rows_ok,
           coalesce(sum(r.rows_error), 0)::BIGINT AS rows_error,
           sum(u.seconds) AS unit_seconds
    FROM keys AS k
    LEFT JOIN units AS u USING (run_id, unit_id)
    LEFT JOIN pair_counts AS p USING (run_id, unit_id)
    LEFT JOIN row_counts AS r USING (run_id, unit_id)
    WHERE ($run_id IS NULL OR k.run_id = $run_id)
      AND ($model IS NULL OR k.model = $model)
      AND ($weights IS NULL OR k.weights = $weights)
      AND ($probe IS NULL OR k.probe = $probe)
      AND ($config_hash IS NULL OR k.config_hash = $config_hash)
    GROUP BY k.model, k.weights, k.embed, k.probe, k.config_hash
)
SELECT g.model, g.weights, g.embed, g.probe, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, probe, config_hash), g.config_hash
FROM grouped AS g
LEFT JOIN (SELECT probe, config_hash, setting FROM settings) AS s USING (probe, config_hash)
ORDER BY g.model, g.weights, g.embed, g.probe, setting, g.config_hash
