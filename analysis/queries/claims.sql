-- description: Verdicts: each claim (equivalence, invisibility, normal_space, lipschitz, overgeneralisation) per model, weights, embedding point and probe setting, judged supported, not_supported or inconclusive by analysis/criteria.yaml, with n, estimate and a bootstrap interval.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- option: criteria = NULL | a YAML file with the criteria to change (NULL: analysis/criteria.yaml as shipped)
-- This SQL gathers every check's per-pair values (one row per setting and check, values sorted,
-- plus one marker row per setting); analysis/claims.py turns them into one row per setting and
-- claim (verdict, criterion, n, estimate, ci_low, ci_high, checks). Missing and NaN values are
-- left out of a check's n. Change the criteria with --param criteria=FILE.
WITH m AS (
    SELECT * FROM match_ok($run_id, $model, $weights, $config_hash)
),
msucc AS (
    SELECT * FROM m WHERE success
),
p AS (
    SELECT * FROM perturb_ok($run_id, $model, $weights, $config_hash)
),
smallest AS (
    SELECT config_hash, norm, min(eps) AS eps FROM p GROUP BY config_hash, norm
),
pmin AS (
    SELECT p.*, p.disp_over_pair / p.random_disp_over_pair AS over_random
    FROM p JOIN smallest USING (config_hash, norm, eps)
),
lpairs AS (
    SELECT model, weights, embed, config_hash,
           median(estimate) FILTER (WHERE family = 'top') AS top,
           median(estimate) FILTER (WHERE family = 'null') AS nul
    FROM lipschitz_estimates($run_id, $model, $weights, $config_hash)
    GROUP BY run_id, unit_id, pair_id, model, weights, embed, config_hash
),
lratio AS (
    SELECT *, CASE WHEN nul > 0 THEN top / nul
                   WHEN nul = 0 AND top > 0 THEN 'inf'::DOUBLE END AS ratio
    FROM lpairs
),
markers AS (  -- every setting with rows of any status (unit_rows: one row per unit with rows)
    SELECT DISTINCT model, weights, embed, probe, config_hash
    FROM unit_rows
    WHERE ($run_id IS NULL OR run_id = $run_id) AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights) AND ($config_hash IS NULL OR config_hash = $config_hash)
),
checks AS (
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'equivalence' AS claim,
           'success_rate' AS statistic, count(success) AS n,
           count(*) FILTER (WHERE success) AS n_true, 0::BIGINT AS n_left_out
    FROM m GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'invisibility' AS claim,
           'median_psnr' AS statistic, count(*) FILTER (WHERE NOT isnan(psnr)) AS n,
           list(psnr ORDER BY psnr) FILTER (WHERE NOT isnan(psnr)) AS sample
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'invisibility' AS claim,
           'median_ssim' AS statistic, count(*) FILTER (WHERE NOT isnan(ssim)) AS n,
           list(ssim ORDER BY ssim) FILTER (WHERE NOT isnan(ssim)) AS sample
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'invisibility' AS claim,
           'quant_rate' AS statistic, count(quant_success) AS n,
           count(*) FILTER (WHERE quant_success) AS n_true
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'overgeneralisation' AS claim,
           'head_target_rate' AS statistic,
           count(*) FILTER (WHERE pred_src <> pred_tgt AND pred_adv IS NOT NULL) AS n,
           count(*) FILTER (WHERE pred_src <> pred_tgt AND pred_adv = pred_tgt) AS n_true,
           count(*) FILTER (WHERE pred_src = pred_tgt AND pred_adv IS NOT NULL) AS n_left_out
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'overgeneralisation' AS claim,
           'knn_target_rate' AS statistic,
           count(*) FILTER (WHERE knn_src <> knn_tgt AND knn_adv IS NOT NULL) AS n,
           count(*) FILTER (WHERE knn_src <> knn_tgt AND knn_adv = knn_tgt) AS n_true,
           count(*) FILTER (WHERE knn_src = knn_tgt AND knn_adv IS NOT NULL) AS n_left_out
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'overgeneralisation' AS claim,
           'zeroshot_target_rate' AS statistic,
           count(*) FILTER (WHERE zs_src <> zs_tgt AND zs_adv IS NOT NULL) AS n,
           count(*) FILTER (WHERE zs_src <> zs_tgt AND zs_adv = zs_tgt) AS n_true,
           count(*) FILTER (WHERE zs_src = zs_tgt AND zs_adv IS NOT NULL) AS n_left_out
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'perturb' AS probe, config_hash, 'normal_space' AS claim,
           'median_disp_over_pair' AS statistic, norm, any_value(eps) AS eps,
           count(*) FILTER (WHERE NOT isnan(disp_over_pair)) AS n,
           list(disp_over_pair ORDER BY disp_over_pair) FILTER (WHERE NOT isnan(disp_over_pair)) AS sample
    FROM pmin GROUP BY model, weights, embed, config_hash, norm
    UNION ALL BY NAME
    SELECT model, weights, embed, 'perturb' AS probe, config_hash, 'normal_space' AS claim,
           'median_over_random' AS statistic, norm, any_value(eps) AS eps,
           count(*) FILTER (WHERE NOT isnan(over_random)) AS n,
           list(over_random ORDER BY over_random) FILTER (WHERE NOT isnan(over_random)) AS sample
    FROM pmin GROUP BY model, weights, embed, config_hash, norm
    UNION ALL BY NAME
    SELECT model, weights, embed, 'lipschitz' AS probe, config_hash, 'lipschitz' AS claim,
           'median_top_over_null' AS statistic, count(*) FILTER (WHERE NOT isnan(ratio)) AS n,
           count(*) FILTER (WHERE ratio IS NULL OR isnan(ratio)) AS n_left_out,
           list(ratio ORDER BY ratio) FILTER (WHERE NOT isnan(ratio)) AS sample
    FROM lratio GROUP BY model, weights, embed, config_hash
),
everything AS (
    SELECT model, weights, embed, probe, config_hash, claim, statistic, norm, eps::DOUBLE AS eps,
           n::BIGINT AS n, n_true::BIGINT AS n_true, coalesce(n_left_out, 0)::BIGINT AS n_left_out,
           sample::DOUBLE[] AS sample
    FROM checks
    UNION ALL BY NAME
    SELECT model, weights, embed, probe, config_hash FROM markers
)
SELECT e.model, e.weights, e.embed, e.probe, coalesce(s.setting, e.config_hash) AS setting,
       e.claim, e.statistic, e.norm, e.eps, e.n, e.n_true, e.n_left_out, e.sample,
       e.config_hash, s.params
FROM everything AS e
LEFT JOIN (SELECT probe, config_hash, setting, params FROM settings) AS s USING (probe, config_hash)
ORDER BY e.model, e.weights, e.embed, e.probe, setting, e.config_hash, e.claim NULLS FIRST,
         e.statistic, e.norm
