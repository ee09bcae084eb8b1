-- The report's Lipschitz figure: a deterministic sample of at most 200 directions per family and setting.
SELECT config_hash, family, estimate FROM (
    SELECT config_hash, family, estimate,
           row_number() OVER (PARTITION BY config_hash, family
                              ORDER BY hash(run_id, unit_id, pair_id, direction)) AS k
    FROM lipschitz_estimates(NULL, NULL, NULL, NULL)
    WHERE estimate > 0 AND isfinite(estimate)
) WHERE k <= 200 ORDER BY config_hash, family, k
