-- description: Gallery: source, matched and target PNG bytes with the match's numbers.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- param: probe = match | images of this probe
-- param: limit = 8 | at most this many triples per model, weights, embedding point and setting
WITH unit_configs AS (
    SELECT run_id, unit_id, any_value(weights) AS weights, any_value(embed) AS embed,
           any_value(config_hash) AS config_hash
    FROM (SELECT DISTINCT run_id, unit_id, weights, embed, config_hash FROM units
          UNION SELECT DISTINCT run_id, unit_id, weights, embed, config_hash FROM match
          UNION SELECT DISTINCT run_id, unit_id, weights, embed, config_hash FROM perturb)
    GROUP BY run_id, unit_id
),
joined AS (
    SELECT i.model, coalesce(m.weights, w.weights) AS weights, coalesce(m.embed, w.embed) AS embed,
           coalesce(m.config_hash, w.config_hash) AS config_hash,
           i.probe, i.variant, i.pair_id, m.src_key, m.tgt_key,
           m.success, m.rel_dist, m.psnr, m.ssim, m.pred_src, m.pred_tgt, m.pred_adv,
           m.pred_src_name, m.pred_tgt_name, m.pred_adv_name,
           i.src_png, i.adv_png, i.tgt_png, i.unit_id, i.run_id
    FROM images AS i
    LEFT JOIN match AS m
      ON m.run_id = i.run_id AND m.unit_id = i.unit_id AND m.pair_id = i.pair_id
    LEFT JOIN unit_configs AS w
      ON w.run_id = i.run_id AND w.unit_id = i.unit_id
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, weights, embed, config_hash
                                 ORDER BY run_id, unit_id, pair_id, variant) AS k
    FROM joined
    WHERE ($run_id IS NULL OR run_id = $run_id)
      AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights)
      AND ($config_hash IS NULL OR config_hash = $config_hash)
      AND ($probe IS NULL OR probe = $probe)
)
SELECT r.model, r.weights, r.embed, coalesce(s.setting, r.config_hash) AS setting,
       r.* EXCLUDE (k, model, weights, embed)
FROM ranked AS r
LEFT JOIN (SELECT probe, config_hash, setting FROM settings) AS s USING (probe, config_hash)
WHERE r.k <= CAST($limit AS BIGINT)
ORDER BY r.model, r.weights, r.embed, setting, r.config_hash, r.run_id, r.unit_id, r.pair_id, r.variant
