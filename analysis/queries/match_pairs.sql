-- description: One row per ok match (for distributions): success, steps, rel_dist, cos, PSNR, SSIM, L-inf, labels.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
SELECT model, weights, pair_id, src_key, tgt_key, success, steps, rel_dist, rel_dist_start, cos,
       psnr, ssim, pix_linf, pix_l2, quant_success, quant_rel_dist,
       pred_src, pred_tgt, pred_adv, knn_src, knn_tgt, knn_adv, unit_id, run_id
FROM match
WHERE status = 'ok'
  AND ($run_id IS NULL OR run_id = $run_id)
  AND ($model IS NULL OR model = $model)
  AND ($weights IS NULL OR weights = $weights)
ORDER BY model, weights, run_id, unit_id, pair_id
