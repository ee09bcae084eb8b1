-- description: Claim 4 (overgeneralisation): share of matched images labelled as the target, by the classifier head, by k-NN and by zero-shot CLIP labels, per match setting, over the pairs whose source and target that labeller labels differently.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: config_hash = NULL | only this probe setting (NULL: all settings)
-- head: pred_adv = pred_tgt; knn: knn_adv = knn_tgt; zeroshot: zs_adv = zs_tgt (models with `text:`). "_success" among successful matches,
-- "_all" among every ok match. Each labeller's shares count only pairs whose source and target
-- it labels differently (a pair it labels alike cannot tell "labelled as the target" from "kept
-- the source's label"); n_<labeller>_same_label[_success] says how many pairs were left out for
-- that. Rows without labels are left out of each share.
-- One row per model, weights, embedding point and setting (config_hash).
WITH labelled AS (
    SELECT *,
           pred_src <> pred_tgt AS head_differ,
           knn_src <> knn_tgt AS knn_differ,
           zs_src <> zs_tgt AS zeroshot_differ
    FROM match_ok($run_id, $model, $weights, $config_hash)
),
grouped AS (
    SELECT model, weights, embed, config_hash,
           count(*) AS n_ok,
           count(*) FILTER (WHERE success) AS n_success,
           avg((pred_adv = pred_tgt)::DOUBLE) FILTER (WHERE success AND head_differ) AS head_target_rate_success,
           avg((pred_adv = pred_tgt)::DOUBLE) FILTER (WHERE head_differ) AS head_target_rate_all,
           avg((pred_adv = pred_src)::DOUBLE) FILTER (WHERE success AND head_differ) AS head_source_rate_success,
           count(pred_adv) FILTER (WHERE success AND head_differ) AS n_head_labelled_success,
           count(pred_adv) FILTER (WHERE success AND NOT head_differ) AS n_head_same_label_success,
           count(pred_adv) FILTER (WHERE NOT head_differ) AS n_head_same_label,
           avg((knn_adv = knn_tgt)::DOUBLE) FILTER (WHERE success AND knn_differ) AS knn_target_rate_success,
           avg((knn_adv = knn_tgt)::DOUBLE) FILTER (WHERE knn_differ) AS knn_target_rate_all,
           avg((knn_adv = knn_src)::DOUBLE) FILTER (WHERE success AND knn_differ) AS knn_source_rate_success,
           count(knn_adv) FILTER (WHERE success AND knn_differ) AS n_knn_labelled_success,
           count(knn_adv) FILTER (WHERE success AND NOT knn_differ) AS n_knn_same_label_success,
           count(knn_adv) FILTER (WHERE NOT knn_differ) AS n_knn_same_label,
           avg((zs_adv = zs_tgt)::DOUBLE) FILTER (WHERE success AND zeroshot_differ) AS zeroshot_target_rate_success,
           avg((zs_adv = zs_tgt)::DOUBLE) FILTER (WHERE zeroshot_differ) AS zeroshot_target_rate_all,
           avg((zs_adv = zs_src)::DOUBLE) FILTER (WHERE success AND zeroshot_differ) AS zeroshot_source_rate_success,
           count(zs_adv) FILTER (WHERE success AND zeroshot_differ) AS n_zeroshot_labelled_success,
           count(zs_adv) FILTER (WHERE success AND NOT zeroshot_differ) AS n_zeroshot_same_label_success,
           count(zs_adv) FILTER (WHERE NOT zeroshot_differ) AS n_zeroshot_same_label,
           any_value(params) AS params
    FROM labelled
    GROUP BY model, weights, embed, config_hash
)
SELECT g.model, g.weights, g.embed, coalesce(s.setting, g.config_hash) AS setting,
       g.* EXCLUDE (model, weights, embed, config_hash, params), g.config_hash, g.params
FROM grouped AS g
LEFT JOIN (SELECT config_hash, setting FROM settings WHERE probe = 'match') AS s USING (config_hash)
ORDER BY g.model, g.weights, g.embed, setting, g.config_hash
