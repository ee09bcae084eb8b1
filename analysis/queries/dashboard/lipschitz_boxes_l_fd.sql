-- Distributions page: box-plot summary of l_fd per series and direction family, over ok rows
-- with a positive value (the axis is logarithmic) at step size $h (NULL: all), and
-- median_l_jvp, the median l_jvp of every ok row of that series and family.
SELECT t.model, t.weights, t.embed, coalesce(s.setting, t.config_hash) AS setting, t.config_hash,
       t.family, count(*) FILTER (WHERE t.l_fd > 0) AS n,
       min(t.l_fd) FILTER (WHERE t.l_fd > 0) AS min,
       quantile_cont(t.l_fd, 0.25) FILTER (WHERE t.l_fd > 0) AS q1,
       quantile_cont(t.l_fd, 0.5) FILTER (WHERE t.l_fd > 0) AS median,
       quantile_cont(t.l_fd, 0.75) FILTER (WHERE t.l_fd > 0) AS q3,
       max(t.l_fd) FILTER (WHERE t.l_fd > 0) AS max,
       median(t.l_jvp) AS median_l_jvp
FROM lipschitz AS t
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
WHERE t.status = 'ok' AND ($h IS NULL OR t.h = $h)
GROUP BY ALL ORDER BY model, weights, embed, setting, config_hash, family
