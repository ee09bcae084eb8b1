-- `vitsweep demo`'s summary: match (equivalence) headline numbers over the ok pairs.
-- knn_adv_is_tgt counts only pairs whose source and target got different k-NN labels: where
-- the labeller gives both one label (random weights give every image one label) the matched
-- image carrying "the target's label" says nothing, so such pairs are left out (NULL if none is left).
SELECT count(*) AS pairs, round(avg(success::INT), 3) AS success_rate,
       round(median(rel_dist_start), 3) AS rel_dist_start, round(median(rel_dist), 3) AS rel_dist,
       round(median(psnr), 1) AS psnr_db,
       round(avg((knn_adv = knn_tgt)::INT) FILTER (WHERE knn_src IS DISTINCT FROM knn_tgt), 3) AS knn_adv_is_tgt
FROM match WHERE status = 'ok'
