-- description: Transfer (issue 23): the A x B matrix of target-closer rates: the share of matched images made on model A that model B embeds nearer the target than the source, with exact (Clopper-Pearson) intervals.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only images matched on this model A (NULL: all models)
-- param: weights = NULL | only A's with these weights (NULL: all)
-- param: config_hash = NULL | only this match setting of A (NULL: all settings)
-- param: condition = success | which of A's matches count: success, quant_success (still matching as the stored 8-bit image) or all
-- option: confidence = 0.95 | width of the exact intervals
-- One row per (A: model, weights, embedding point, match setting; B: model setting). `same_setting`
-- marks the diagonal (B = A), where the rate is the 8-bit re-check's view of A's own matches.
WITH cells AS (
    SELECT model_a, weights_a, embed_a, config_hash,
           model AS model_b, weights AS weights_b, embed AS embed_b, setting_b,
           bool_or(same_setting) AS same_setting,
           count(*) AS n,
           count(*) FILTER (WHERE target_closer) AS n_target_closer,
           avg(target_closer::DOUBLE) AS target_closer_rate,
           median(rel_dist_tgt) AS median_rel_dist_tgt,
           median(rel_dist_src) AS median_rel_dist_src,
           avg((pred_adv = pred_tgt)::DOUBLE) FILTER (WHERE pred_src <> pred_tgt) AS head_target_rate,
           avg((knn_adv = knn_tgt)::DOUBLE) FILTER (WHERE knn_src <> knn_tgt) AS knn_target_rate,
           avg((zs_adv = zs_tgt)::DOUBLE) FILTER (WHERE zs_src <> zs_tgt) AS zeroshot_target_rate,
           bool_or(resized) AS resized
    FROM transfer
    WHERE ($run_id IS NULL OR run_id = $run_id)
      AND ($model IS NULL OR model_a = $model)
      AND ($weights IS NULL OR weights_a = $weights)
      AND ($config_hash IS NULL OR config_hash = $config_hash)
      AND (CASE $condition WHEN 'all' THEN true WHEN 'quant_success' THEN coalesce(a_quant_success, false)
           ELSE coalesce(a_success, false) END)
    GROUP BY model_a, weights_a, embed_a, config_hash, model, weights, embed, setting_b
)
SELECT c.model_a, c.weights_a, c.embed_a, coalesce(s.setting, c.config_hash) AS setting,
       c.* EXCLUDE (model_a, weights_a, embed_a), s.params
FROM cells AS c
LEFT JOIN (SELECT config_hash, setting, params FROM settings WHERE probe = 'match') AS s USING (config_hash)
ORDER BY c.model_a, c.weights_a, c.embed_a, setting, c.config_hash, c.model_b, c.weights_b, c.embed_b, c.setting_b
