-- description: The Jacobian's spectrum per pair (table `spectrum`: every singular value of J = df/dx at the source, stored whenever a probe built J): sigma_1, numerical rank, effective rank, stable rank and sigma_k / sigma_1.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- param: k = 10 | the k of sigma_k / sigma_1 (1 = sigma_1; NULL past the last singular value)
-- effective_rank = exp(entropy of p_i = sigma_i / sum sigma) (Roy and Vetterli 2007): D for a
-- flat spectrum, 1 for a single direction. stable_rank = sum sigma_i^2 / sigma_1^2.
-- rank = singular values above rank_rtol * sigma_1 (an fp32 J resolves down to about 1e-6 sigma_1).
-- One row per pair; a probe setting that never built J has no rows here.
WITH ok AS (
    SELECT run_id, unit_id, pair_id, model, weights, embed, config_hash, params, jacobian, rank,
           n_values, singular_values, list_sum(singular_values) AS total
    FROM spectrum
    WHERE status = 'ok'
      AND ($run_id IS NULL OR run_id = $run_id)
      AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights)
      AND ($config_hash IS NULL OR config_hash = $config_hash)
)
SELECT o.model, o.weights, o.embed, coalesce(s.setting, o.config_hash) AS setting, o.pair_id,
       o.jacobian, o.n_values, o.rank,
       o.singular_values[1] AS sigma1,
       exp(-list_sum(list_transform(list_filter(o.singular_values, lambda x: x > 0),
                                    lambda x: (x / o.total) * ln(x / o.total)))) AS effective_rank,
       list_sum(list_transform(o.singular_values, lambda x: x * x)) / nullif(o.singular_values[1] ^ 2, 0) AS stable_rank,
       CAST($k AS INTEGER) AS k,
       o.singular_values[CAST($k AS INTEGER)] / nullif(o.singular_values[1], 0) AS sigma_k_over_sigma1,
       o.singular_values[o.n_values] / nullif(o.singular_values[1], 0) AS sigma_min_over_sigma1,
       o.config_hash, o.unit_id, o.run_id
FROM ok AS o
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'lipschitz') AS s USING (config_hash)
ORDER BY o.model, o.weights, o.embed, setting, o.config_hash, o.run_id, o.unit_id, o.pair_id
