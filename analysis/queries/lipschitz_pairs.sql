-- description: Claim 3 per pair: sigma1 over the median random-direction estimate, top versus null (row space of J removed), random versus null, grad and match versus random.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- A direction's estimate is l_jvp, or l_fd at its smallest h where l_jvp is missing.
-- sigma1 is the largest `top` sigma (or `top` estimate where sigma is missing).
-- Families: grad = first matching step (-gradient at x0), match = x_matched - x0 of a successful
-- match, null = row space of J projected out (rank: J's numerical rank), off_top = top-k removed.
WITH per_pair AS (
    SELECT run_id, unit_id, pair_id, model, weights, embed, config_hash,
           coalesce(max(sigma) FILTER (WHERE family = 'top'),
                    max(estimate) FILTER (WHERE family = 'top')) AS sigma1,
           median(estimate) FILTER (WHERE family = 'random') AS median_random,
           median(estimate) FILTER (WHERE family = 'top') AS median_top,
           median(estimate) FILTER (WHERE family = 'null') AS median_null,
           median(estimate) FILTER (WHERE family = 'match') AS median_match,
           median(estimate) FILTER (WHERE family = 'grad') AS median_grad,
           median(estimate) FILTER (WHERE family = 'off_top') AS median_off_top,
           count(*) FILTER (WHERE family = 'random') AS n_random,
           count(*) FILTER (WHERE family = 'top') AS n_top,
           count(*) FILTER (WHERE family = 'null') AS n_null
    FROM lipschitz_estimates($run_id, $model, $weights, $config_hash)
    GROUP BY run_id, unit_id, pair_id, model, weights, embed, config_hash
),
ranks AS (
    SELECT run_id, unit_id, pair_id, config_hash, max(rank) AS rank
    FROM lipschitz_ok($run_id, $model, $weights, $config_hash)
    GROUP BY run_id, unit_id, pair_id, config_hash
)
SELECT p.model, p.weights, p.embed, coalesce(s.setting, p.config_hash) AS setting,
       p.pair_id, p.sigma1, p.median_random,
       p.sigma1 / nullif(p.median_random, 0) AS sigma1_over_random,
       p.median_top, p.median_null,
       p.median_top / nullif(p.median_null, 0) AS top_over_null,
       p.median_match,
       p.median_match / nullif(p.median_random, 0) AS match_over_random,
       p.median_grad,
       p.median_grad / nullif(p.median_random, 0) AS grad_over_random,
       p.median_random / nullif(p.median_null, 0) AS random_over_null,
       p.median_off_top, r.rank,
       p.n_top, p.n_random, p.n_null, p.config_hash, p.unit_id, p.run_id
FROM per_pair AS p
LEFT JOIN ranks AS r USING (run_id, unit_id, pair_id, config_hash)
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
ORDER BY p.model, p.weights, p.embed, setting, p.config_hash, p.run_id, p.unit_id, p.pair_id
