-- Distributions page: histogram bins of rel_dist, PSNR and SSIM of ok match rows per series
-- (model, weights, embed, setting, config_hash). The bins of a metric are shared by its series:
-- $bins equal widths between its finite minimum and maximum. One scan of the match rows.
WITH long AS MATERIALIZED (
    SELECT model, weights, embed, setting, config_hash, metric, x
    FROM (SELECT t.model, t.weights, t.embed, coalesce(s.setting, t.config_hash) AS setting,
                 t.config_hash, t.rel_dist, t.psnr, t.ssim
          FROM match AS t
          LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s
               USING (config_hash)
          WHERE t.status = 'ok')
    UNPIVOT (x FOR metric IN (rel_dist, psnr, ssim)) WHERE isfinite(x)
),
ranges AS (
    SELECT metric, min(x) AS lo,
           CASE WHEN max(x) > min(x) THEN (max(x) - min(x)) / $bins ELSE 1 END AS width
    FROM long GROUP BY metric
)
SELECT model, weights, embed, setting, config_hash, metric, lo + b * width AS bin_start,
       lo + (b + 1) * width AS bin_end, count(*) AS count
FROM (SELECT l.*, r.lo, r.width,
             least(CAST(floor((l.x - r.lo) / r.width) AS INTEGER), $bins - 1) AS b
      FROM long AS l JOIN ranges AS r USING (metric))
GROUP BY ALL ORDER BY metric, model, weights, embed, setting, config_hash, bin_start
