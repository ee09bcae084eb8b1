-- description: Claims 1-2 (invisibility): PSNR, SSIM and L-inf of successful matches, and the share that survives 8-bit rounding, per match setting.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- Pixel metrics are over successful matches (status 'ok' and success); pix_linf_255 is in 8-bit levels.
-- One row per model, weights, embedding point and setting (config_hash).
WITH grouped AS (
    SELECT model, weights, embed, config_hash,
           count(*) AS n_success,
           median(psnr) AS median_psnr,
           avg(psnr) AS mean_psnr,
           min(psnr) AS min_psnr,
           median(ssim) AS median_ssim,
           avg(ssim) AS mean_ssim,
           median(pix_linf) AS median_pix_linf,
           max(pix_linf) AS max_pix_linf,
           median(pix_linf) * 255 AS median_pix_linf_255,
           median(pix_l2) AS median_pix_l2,
           avg(quant_success::DOUBLE) AS quant_success_rate,
           count(*) FILTER (WHERE quant_success) AS n_quant_success,
           median(quant_rel_dist) AS median_quant_rel_dist,
           any_value(params) AS params
    FROM match_ok($run_id, $model, $weights, $config_hash)
    WHERE success
    GROUP BY model, weights, embed, config_hash
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash
