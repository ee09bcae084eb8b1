-- The headline figure's curves (probe equivalence), per setting: at each point i of a curve,
-- the 10th, 50th and 90th percentiles over pairs and how many pairs reach it. Curves (values
-- relative to the pair distance ||f(x0) - f(target)||): `target` ||f(y) - f(target)|| at K
-- points y on target -> x_matched, `linear` the miss of f(x0) + t J (x_matched - x0) on
-- x0 -> x_matched (successful matches only), `walk` and `random_walk` ||f(x) - f(x0)|| after
-- each walk step (a walk that leaves the set stops, so later steps have fewer pairs). k: points
-- per path curve; delta: the walk's bound.
WITH e AS (
    SELECT config_hash, delta, path_target_curve, path_linear_curve, walk_curve, random_walk_curve
    FROM equivalence_ok(NULL, NULL, NULL, NULL)
),
long AS (
    SELECT config_hash, delta, 'target' AS curve, len(path_target_curve) AS k,
           unnest(path_target_curve) AS v, generate_subscripts(path_target_curve, 1) AS i
    FROM e WHERE path_target_curve IS NOT NULL
    UNION ALL
    SELECT config_hash, delta, 'linear', len(path_linear_curve), unnest(path_linear_curve),
           generate_subscripts(path_linear_curve, 1)
    FROM e WHERE path_linear_curve IS NOT NULL
    UNION ALL
    SELECT config_hash, delta, 'walk', NULL, unnest(walk_curve), generate_subscripts(walk_curve, 1)
    FROM e WHERE walk_curve IS NOT NULL
    UNION ALL
    SELECT config_hash, delta, 'random_walk', NULL, unnest(random_walk_curve),
           generate_subscripts(random_walk_curve, 1)
    FROM e WHERE random_walk_curve IS NOT NULL
)
SELECT config_hash, curve, i, max(k) AS k, any_value(delta) AS delta, count(*) AS n,
       quantile_cont(v, 0.1) AS p10, quantile_cont(v, 0.5) AS p50, quantile_cont(v, 0.9) AS p90
FROM long
WHERE v IS NOT NULL AND NOT isnan(v)
GROUP BY config_hash, curve, i
ORDER BY config_hash, curve, i
