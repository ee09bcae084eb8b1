-- description: The paper's headline in numbers (probe equivalence), per model, weights, embedding point and setting: how far the equivalence walk travels against the random-direction walk (radii, their per-pair ratio, image distance), and how far the segment target -> x_matched and the path x0 -> x_matched stray (relative to the pair distance and to the match's own tolerance). The verdicts large_equivalence and piecewise_linear are in the named query `claims`.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- walk_over_random per pair: walk_radius / random_walk_radius; +inf where the random walk kept
-- nothing and the equivalence walk moved, 1 where neither moved (as `claims` counts it).
-- target_over_end per successful match: the largest ||f(y) - f(target)|| on target -> x_matched
-- over its value at x_matched. Medians leave NULL and NaN values out.
WITH e AS (
    SELECT *,
           CASE WHEN random_walk_radius > 0 THEN walk_radius / random_walk_radius
                WHEN walk_radius > 0 THEN 'inf'::DOUBLE
                WHEN walk_radius = 0 THEN 1.0 END AS walk_over_random,
           CASE WHEN NOT match_success OR isnan(path_target_max) OR isnan(path_target_end) THEN NULL
                WHEN path_target_max <= 0 THEN 0.0
                WHEN path_target_end > 0 THEN path_target_max / path_target_end
                ELSE 'inf'::DOUBLE END AS target_over_end
    FROM equivalence_ok($run_id, $model, $weights, $config_hash)
)
SELECT e.model, e.weights, e.embed, coalesce(s.setting, e.config_hash) AS setting,
       count(*) AS pairs,
       count(*) FILTER (WHERE walk_radius IS NOT NULL) AS walks,
       -- walks that kept every step they took (never found the set's edge: their radius is the
       -- walk's length); large_equivalence leaves out pairs whose random walk did
       count(*) FILTER (WHERE walk_kept >= len(walk_curve)) AS walks_capped,
       count(*) FILTER (WHERE random_walk_kept >= len(random_walk_curve)) AS random_walks_capped,
       median(walk_radius) FILTER (WHERE NOT isnan(walk_radius)) AS median_walk_radius,
       median(random_walk_radius) FILTER (WHERE NOT isnan(random_walk_radius)) AS median_random_walk_radius,
       median(walk_over_random) FILTER (WHERE NOT isnan(walk_over_random)) AS median_walk_ratio,
       median(walk_linf) FILTER (WHERE NOT isnan(walk_linf)) AS median_walk_linf,
       median(walk_psnr) FILTER (WHERE NOT isnan(walk_psnr)) AS median_walk_psnr,
       median(walk_ssim) FILTER (WHERE NOT isnan(walk_ssim)) AS median_walk_ssim,
       count(*) FILTER (WHERE match_success) AS matches,
       median(target_over_end) AS median_target_over_end,
       median(path_target_max) FILTER (WHERE match_success AND NOT isnan(path_target_max)) AS median_path_target_max,
       median(path_linear_max) FILTER (WHERE match_success AND NOT isnan(path_linear_max)) AS median_path_linear_max,
       median(path_chord_max) FILTER (WHERE match_success AND NOT isnan(path_chord_max)) AS median_path_chord_max,
       median(seg_tgt_l2) FILTER (WHERE match_success AND NOT isnan(seg_tgt_l2)) AS median_seg_tgt_l2,
       median(seg_tgt_psnr) FILTER (WHERE match_success AND NOT isnan(seg_tgt_psnr)) AS median_seg_tgt_psnr,
       e.config_hash
FROM e
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'equivalence') AS s USING (config_hash)
GROUP BY e.model, e.weights, e.embed, s.setting, e.config_hash
ORDER BY e.model, e.weights, e.embed, setting, e.config_hash
