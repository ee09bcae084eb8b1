-- Distributions page: median disp_over_pair per (series, norm, ε), adversarial and random, in
-- long format.
SELECT model, weights, embed, setting, config_hash, norm, eps, kind, value
FROM (SELECT t.model, t.weights, t.embed, coalesce(s.setting, t.config_hash) AS setting,
             t.config_hash, norm, eps,
             median(disp_over_pair) AS adversarial, median(random_disp_over_pair) AS random
      FROM perturb AS t
      LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'perturb') AS s
           USING (config_hash)
      WHERE status = 'ok' GROUP BY ALL)
UNPIVOT (value FOR kind IN (adversarial, random))
ORDER BY model, weights, embed, setting, config_hash, norm, eps, kind
