-- description: Claim 2 (normal space): embedding displacement over the pair distance against eps, per norm and perturb setting, with the random baseline at the same eps.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- param: norm = NULL | only this norm, l2 or linf (NULL: both)
-- eps_255 is eps in 8-bit levels (meaningful for linf). over_random = disp_over_pair / random_disp_over_pair per row,
-- against the median random draw (random_disp_*); *_max columns are against the best of the draws (runs before
-- the median baseline have no random_disp_max: their random_disp was the best draw).
-- One row per model, weights, embedding point, setting (config_hash), norm and eps.
WITH grouped AS (
    SELECT model, weights, embed, config_hash, norm, eps,
           eps * 255 AS eps_255,
           count(*) AS n,
           median(disp_over_pair) AS median_disp_over_pair,
           avg(disp_over_pair) AS mean_disp_over_pair,
           quantile_cont(disp_over_pair, 0.1) AS p10_disp_over_pair,
           quantile_cont(disp_over_pair, 0.9) AS p90_disp_over_pair,
           median(random_disp_over_pair) AS median_random_disp_over_pair,
           avg(random_disp_over_pair) AS mean_random_disp_over_pair,
           median(disp_over_pair / nullif(random_disp_over_pair, 0)) AS median_over_random,
           median(random_disp_over_pair_max) AS median_random_disp_over_pair_max,
           median(disp_over_pair / nullif(random_disp_over_pair_max, 0)) AS median_over_random_max,
           median(rel_disp) AS median_rel_disp,
           median(random_rel_disp) AS median_random_rel_disp,
           median(cos_after) AS median_cos_after,
           avg((pred_adv <> pred_src)::DOUBLE) AS label_change_rate,
           any_value(params) AS params
    FROM perturb_ok($run_id, $model, $weights, $config_hash)
    WHERE $norm IS NULL OR norm = $norm
    GROUP BY model, weights, embed, config_hash, norm, eps
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'perturb') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash, g.norm, g.eps
