-- The report's Lipschitz figure: box-plot summary of the per-direction estimates per family and setting.
SELECT config_hash, family, count(*) AS n,
       quantile_cont(estimate, 0.05) AS p05, quantile_cont(estimate, 0.25) AS q1,
       quantile_cont(estimate, 0.5) AS median, quantile_cont(estimate, 0.75) AS q3,
       quantile_cont(estimate, 0.95) AS p95
FROM lipschitz_estimates(NULL, NULL, NULL, NULL)
WHERE estimate > 0 AND isfinite(estimate)
GROUP BY config_hash, family ORDER BY config_hash, family
