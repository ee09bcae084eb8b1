-- description: Verdicts: each claim (equivalence, invisibility, normal_space, lipschitz, overgeneralisation, large_equivalence, piecewise_linear) per model, weights, embedding point and probe setting, judged supported, not_supported or inconclusive by analysis/criteria.yaml, with n (independent units), estimate, an exact interval (Clopper-Pearson, order statistics), the pairs and images behind it, and the shape-matched Gaussian control's value where a check has one.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- option: criteria = NULL | a YAML file with the criteria to change (NULL: analysis/criteria.yaml as shipped)
-- This SQL gathers every check's per-pair values with their image keys (`obs`: a list of
-- struct (y: value, 1/0 for a rate; s: src_key; t: tgt_key; h: step, where a check has one),
-- ordered by pair id: the order in which analysis/dependence.py sets pairs aside; one row per setting and check,
-- plus one marker row per setting), the same statistic's values of a Gaussian control run of the
-- same probe params (`ctrl`, model 'control:gaussian:<model>') and the shapes the units recorded
-- (input_dim d, embed_dim D: the closed-form Gaussian reference). analysis/claims.py turns them
-- into one row per setting and claim (verdict, criterion, n, estimate, ci_low, ci_high, checks).
-- Missing and NaN values are left out of a check. Change the criteria with --param criteria=FILE.
WITH m AS (
    SELECT * FROM match_ok($run_id, $model, $weights, $config_hash)
),
msucc AS (
    SELECT * FROM m WHERE success
),
p AS (
    SELECT * FROM perturb_ok($run_id, NULL, NULL, NULL)
    WHERE (($model IS NULL OR model = $model) AND ($weights IS NULL OR weights = $weights)
           AND ($config_hash IS NULL OR config_hash = $config_hash))
       OR model LIKE 'control:%'
),
smallest AS (
    SELECT config_hash, norm, min(eps) AS eps FROM p GROUP BY config_hash, norm
),
pmin AS (
    SELECT p.*, p.disp_over_pair / p.random_disp_over_pair AS over_random
    FROM p JOIN smallest USING (config_hash, norm, eps)
),
lrows AS (
    SELECT * FROM lipschitz_ok($run_id, NULL, NULL, NULL)
    WHERE (($model IS NULL OR model = $model) AND ($weights IS NULL OR weights = $weights)
           AND ($config_hash IS NULL OR config_hash = $config_hash))
       OR model LIKE 'control:%'
),
lpairs AS (
    SELECT model, weights, embed, params, config_hash, pair_id, unit_id,
           any_value(src_key) AS src_key, any_value(tgt_key) AS tgt_key,
           max(coalesce(sigma, l_jvp)) FILTER (WHERE family = 'top') AS sigma1,
           median(l_jvp) FILTER (WHERE family = 'random') AS random_jvp
    FROM lrows
    GROUP BY run_id, unit_id, pair_id, model, weights, embed, params, config_hash
),
lfd AS (  -- per pair and step h: finite-difference estimates along top and null directions
    SELECT model, weights, embed, config_hash, pair_id, h,
           any_value(src_key) AS src_key, any_value(tgt_key) AS tgt_key,
           median(l_fd) FILTER (WHERE family = 'top') AS top_fd,
           -- a null direction whose finite difference is within its round-off floor moved
           -- nothing measurable at h: resolved to zero (counted, not dropped)
           median(CASE WHEN l_fd <= coalesce(fd_floor, 0) THEN 0.0 ELSE l_fd END)
               FILTER (WHERE family = 'null') AS null_fd
    FROM lrows WHERE h > 0 AND fd_residual IS NULL  -- the grid's steps (not the match path's own)
    GROUP BY run_id, unit_id, pair_id, model, weights, embed, config_hash, h
),
lstat AS (
    SELECT *, sigma1 / random_jvp AS anisotropy FROM lpairs
),
lfdstat AS (
    SELECT *, CASE WHEN null_fd > 0 THEN top_fd / null_fd
                   WHEN null_fd = 0 AND top_fd > 0 THEN 'inf'::DOUBLE END AS top_over_null_fd
    FROM lfd
),
eq AS (  -- probe equivalence: the walk ratio and the target segment's deviation per pair
    SELECT *,
           CASE WHEN random_walk_radius > 0 THEN walk_radius / random_walk_radius
                WHEN walk_radius > 0 THEN 'inf'::DOUBLE  -- the random walk kept nothing
                WHEN walk_radius = 0 THEN 1.0 END AS walk_over_random,  -- neither moved
           -- the random walk kept every step it took: it never found the set's edge, so its
           -- radius is the walk's length, not the set's, and the pair's ratio is not measured
           coalesce(random_walk_kept >= len(random_walk_curve), false) AS random_capped,
           -- largest ||f(y) - f(target)|| on target -> x_matched over its value at x_matched (the
           -- match's own tolerance); analysis/claims.py counts a pair linear at or below a factor
           CASE WHEN path_target_max <= 0 THEN 0.0
                WHEN path_target_end > 0 THEN path_target_max / path_target_end
                ELSE 'inf'::DOUBLE END AS target_over_end
    FROM equivalence_ok($run_id, $model, $weights, $config_hash)
),
shapes AS (  -- d (pixels) and D (embedding size) per setting, where the units recorded them
    SELECT config_hash, max(input_dim) AS input_dim, max(embed_dim) AS embed_dim
    FROM units GROUP BY config_hash
),
markers AS (  -- every setting with rows of any status (unit_rows: one row per unit with rows)
    SELECT DISTINCT model, weights, embed, probe, config_hash
    FROM unit_rows
    WHERE ($run_id IS NULL OR run_id = $run_id) AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights) AND ($config_hash IS NULL OR config_hash = $config_hash)
),
checks AS (
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'equivalence' AS claim,
           'success_rate' AS statistic,
           list(struct_pack(y := success::DOUBLE, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE success IS NOT NULL) AS obs
    FROM m GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'invisibility' AS claim,
           'median_psnr' AS statistic,
           list(struct_pack(y := psnr, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE NOT isnan(psnr)) AS obs
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'invisibility' AS claim,
           'median_ssim' AS statistic,
           list(struct_pack(y := ssim, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE NOT isnan(ssim)) AS obs
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'invisibility' AS claim,
           'quant_rate' AS statistic,
           list(struct_pack(y := quant_success::DOUBLE, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE quant_success IS NOT NULL) AS obs
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'overgeneralisation' AS claim,
           'head_target_rate' AS statistic,
           list(struct_pack(y := (pred_adv = pred_tgt)::DOUBLE, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE pred_src <> pred_tgt AND pred_adv IS NOT NULL) AS obs,
           count(*) FILTER (WHERE pred_src = pred_tgt AND pred_adv IS NOT NULL) AS n_left_out
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'overgeneralisation' AS claim,
           'knn_target_rate' AS statistic,
           list(struct_pack(y := (knn_adv = knn_tgt)::DOUBLE, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE knn_src <> knn_tgt AND knn_adv IS NOT NULL) AS obs,
           count(*) FILTER (WHERE knn_src = knn_tgt AND knn_adv IS NOT NULL) AS n_left_out
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'match' AS probe, config_hash, 'overgeneralisation' AS claim,
           'zeroshot_target_rate' AS statistic,
           list(struct_pack(y := (zs_adv = zs_tgt)::DOUBLE, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE zs_src <> zs_tgt AND zs_adv IS NOT NULL) AS obs,
           count(*) FILTER (WHERE zs_src = zs_tgt AND zs_adv IS NOT NULL) AS n_left_out
    FROM msucc GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'perturb' AS probe, config_hash, 'normal_space' AS claim,
           'median_disp_over_pair' AS statistic, norm, any_value(eps) AS eps, any_value(params) AS probe_params,
           list(struct_pack(y := disp_over_pair, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE NOT isnan(disp_over_pair)) AS obs
    FROM pmin GROUP BY model, weights, embed, config_hash, norm
    UNION ALL BY NAME
    SELECT model, weights, embed, 'perturb' AS probe, config_hash, 'normal_space' AS claim,
           'median_over_random' AS statistic, norm, any_value(eps) AS eps, any_value(params) AS probe_params,
           list(struct_pack(y := over_random, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE NOT isnan(over_random)) AS obs,
           count(*) FILTER (WHERE over_random IS NULL OR isnan(over_random)) AS n_left_out
    FROM pmin GROUP BY model, weights, embed, config_hash, norm
    UNION ALL BY NAME
    SELECT model, weights, embed, 'lipschitz' AS probe, config_hash, 'lipschitz' AS claim,
           'median_anisotropy' AS statistic, any_value(params) AS probe_params,
           list(struct_pack(y := anisotropy, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE NOT isnan(anisotropy)) AS obs,
           count(*) FILTER (WHERE anisotropy IS NULL OR isnan(anisotropy)) AS n_left_out
    FROM lstat GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'lipschitz' AS probe, config_hash, 'lipschitz' AS claim,
           'median_top_over_null_fd' AS statistic,
           list(struct_pack(y := top_over_null_fd, s := src_key, t := tgt_key, h := h) ORDER BY pair_id, h)
               FILTER (WHERE top_fd IS NOT NULL AND null_fd IS NOT NULL) AS obs
    FROM lfdstat GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'lipschitz' AS probe, config_hash, 'lipschitz' AS claim,
           'median_match_nonlinearity' AS statistic,
           list(struct_pack(y := fd_residual, s := src_key, t := tgt_key, h := h)
                ORDER BY pair_id, unit_id) FILTER (WHERE NOT isnan(fd_residual)) AS obs
    FROM lrows WHERE family = 'match' AND fd_residual IS NOT NULL
    GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'equivalence' AS probe, config_hash, 'large_equivalence' AS claim,
           'median_walk_ratio' AS statistic,
           list(struct_pack(y := walk_over_random, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE walk_over_random IS NOT NULL AND NOT isnan(walk_over_random) AND NOT random_capped) AS obs,
           count(*) FILTER (WHERE walk_over_random IS NULL OR isnan(walk_over_random) OR random_capped) AS n_left_out
    FROM eq GROUP BY model, weights, embed, config_hash
    UNION ALL BY NAME
    SELECT model, weights, embed, 'equivalence' AS probe, config_hash, 'piecewise_linear' AS claim,
           'linear_rate' AS statistic,
           list(struct_pack(y := target_over_end, s := src_key, t := tgt_key) ORDER BY pair_id, unit_id)
               FILTER (WHERE match_success AND NOT isnan(path_target_max) AND NOT isnan(path_target_end)) AS obs
    FROM eq GROUP BY model, weights, embed, config_hash
),
controlled AS (  -- a check's control: the same statistic of 'control:gaussian:<model>' runs
    SELECT c.config_hash, c.statistic, c.norm,
           flatten(list(k.obs ORDER BY k.config_hash)) AS ctrl
    FROM checks AS c
    JOIN checks AS k
      ON k.model = 'control:gaussian:' || c.model AND k.embed IS NOT DISTINCT FROM c.embed
     AND k.probe = c.probe AND k.statistic = c.statistic
     AND k.norm IS NOT DISTINCT FROM c.norm AND k.eps IS NOT DISTINCT FROM c.eps
     AND k.probe_params IS NOT DISTINCT FROM c.probe_params
    WHERE c.statistic IN ('median_over_random', 'median_anisotropy')
    GROUP BY c.config_hash, c.statistic, c.norm
),
everything AS (
    SELECT c.model, c.weights, c.embed, c.probe, c.config_hash, c.claim, c.statistic, c.norm,
           c.eps::DOUBLE AS eps, coalesce(c.n_left_out, 0)::BIGINT AS n_left_out,
           c.obs, k.ctrl, s.input_dim::BIGINT AS input_dim, s.embed_dim::BIGINT AS embed_dim
    FROM checks AS c
    LEFT JOIN controlled AS k
      ON k.config_hash = c.config_hash AND k.statistic = c.statistic
     AND k.norm IS NOT DISTINCT FROM c.norm
    LEFT JOIN shapes AS s ON s.config_hash = c.config_hash
    WHERE ($model IS NULL OR c.model = $model) AND ($weights IS NULL OR c.weights = $weights)
      AND ($config_hash IS NULL OR c.config_hash = $config_hash)
      AND ($run_id IS NULL OR c.config_hash IN (SELECT config_hash FROM markers))
    UNION ALL BY NAME
    SELECT model, weights, embed, probe, config_hash FROM markers
)
SELECT e.model, e.weights, e.embed, e.probe, coalesce(s.setting, e.config_hash) AS setting,
       e.claim, e.statistic, e.norm, e.eps, e.n_left_out, e.obs, e.ctrl, e.input_dim,
       e.embed_dim, e.config_hash, s.params
FROM everything AS e
LEFT JOIN (SELECT probe, config_hash, setting, params FROM settings) AS s USING (probe, config_hash)
ORDER BY e.model, e.weights, e.embed, e.probe, setting, e.config_hash, e.claim NULLS FIRST,
         e.statistic, e.norm
