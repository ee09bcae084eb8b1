-- Distributions page: ECDF points of rel_dist, PSNR and SSIM of ok match rows per series (the
-- quantiles at the fractions $fractions). One scan of the match rows.
SELECT model, weights, embed, setting, config_hash, metric,
       unnest(quantile_cont(x, $fractions)) AS value, unnest($fractions) AS fraction
FROM (SELECT model, weights, embed, setting, config_hash, metric, x
      FROM (SELECT t.model, t.weights, t.embed, coalesce(s.setting, t.config_hash) AS setting,
                   t.config_hash, t.rel_dist, t.psnr, t.ssim
            FROM match AS t
            LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s
                 USING (config_hash)
            WHERE t.status = 'ok')
      UNPIVOT (x FOR metric IN (rel_dist, psnr, ssim)) WHERE isfinite(x))
GROUP BY model, weights, embed, setting, config_hash, metric
ORDER BY metric, model, weights, embed, setting, config_hash, fraction
