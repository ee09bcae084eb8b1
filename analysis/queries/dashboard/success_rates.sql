-- Distributions page: success rate of ok match rows per series.
SELECT t.model, t.weights, t.embed, coalesce(s.setting, t.config_hash) AS setting, t.config_hash,
       count(*) AS n_ok, avg(t.success::INT) AS success_rate
FROM match AS t
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
WHERE t.status = 'ok' GROUP BY ALL ORDER BY model, weights, embed, setting, config_hash
