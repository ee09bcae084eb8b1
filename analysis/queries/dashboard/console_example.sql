SELECT model, weights, embed, setting, count(*) AS pairs, avg(success::INT) AS success_rate,
       median(rel_dist) AS median_rel_dist, median(psnr) AS median_psnr
FROM match JOIN (SELECT config_hash, setting FROM settings) USING (config_hash)
WHERE status = 'ok'
GROUP BY model, weights, embed, config_hash, setting
ORDER BY model, weights, embed, setting