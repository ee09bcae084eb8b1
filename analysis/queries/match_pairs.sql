-- description: One row per ok match (for distributions): success, steps, rel_dist, cos, PSNR, SSIM, L-inf, labels.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
SELECT m.model, m.weights, m.embed, coalesce(s.setting, m.config_hash) AS setting,
       m.pair_id, m.src_key, m.tgt_key, m.success, m.steps, m.rel_dist, m.rel_dist_start, m.cos,
       m.psnr, m.ssim, m.pix_linf, m.pix_l2, m.quant_success, m.quant_rel_dist,
       m.pred_src, m.pred_tgt, m.pred_adv, m.knn_src, m.knn_tgt, m.knn_adv,
       m.config_hash, m.unit_id, m.run_id
FROM match_ok($run_id, $model, $weights, $config_hash) AS m
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
ORDER BY m.model, m.weights, m.embed, setting, m.config_hash, m.run_id, m.unit_id, m.pair_id
