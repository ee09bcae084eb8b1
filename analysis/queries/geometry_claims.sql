-- description: Verdicts on the paper's headline, from probe equivalence: large_equivalence (median walk ratio, exact order-statistic interval) and piecewise_linear (share of successful matches whose segment target -> x_matched stays equivalent, Clopper-Pearson), per model, weights, embedding point and setting, by analysis/criteria.yaml.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- option: criteria = NULL | a YAML file with the criteria to change (NULL: analysis/criteria.yaml as shipped)
-- This SQL gathers the per-pair values (one row per equivalence setting); analysis/geometry_claims.py
-- turns them into one row per setting and claim, in the columns of the `claims` query.
-- walk ratio: +inf where the random walk kept nothing and the equivalence walk moved; 1 where
-- neither moved. Missing and NaN values are left out of n.
WITH e AS (
    SELECT * FROM equivalence_ok($run_id, $model, $weights, $config_hash)
),
ratios AS (
    SELECT *, CASE WHEN random_walk_radius > 0 THEN walk_radius / random_walk_radius
                   WHEN walk_radius > 0 THEN 'inf'::DOUBLE
                   WHEN walk_radius = 0 THEN 1.0 END AS ratio
    FROM e
)
SELECT r.model, r.weights, r.embed, coalesce(s.setting, r.config_hash) AS setting, r.config_hash,
       any_value(r.params) AS params,
       list(r.ratio ORDER BY r.ratio) FILTER (WHERE r.ratio IS NOT NULL AND NOT isnan(r.ratio)) AS ratios,
       list(r.path_target_max ORDER BY r.pair_id, r.unit_id, r.run_id)
           FILTER (WHERE r.match_success AND r.path_target_max IS NOT NULL AND NOT isnan(r.path_target_max)
                   AND NOT isnan(r.path_target_end)) AS target_max,
       list(r.path_target_end ORDER BY r.pair_id, r.unit_id, r.run_id)
           FILTER (WHERE r.match_success AND r.path_target_max IS NOT NULL AND NOT isnan(r.path_target_max)
                   AND NOT isnan(r.path_target_end)) AS target_end
FROM ratios AS r
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'equivalence') AS s USING (config_hash)
GROUP BY r.model, r.weights, r.embed, s.setting, r.config_hash
ORDER BY r.model, r.weights, r.embed, setting, r.config_hash
