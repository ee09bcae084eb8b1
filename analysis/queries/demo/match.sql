-- `vitsweep demo`'s summary: match (equivalence) headline numbers over the ok pairs.
SELECT count(*) AS pairs, round(avg(success::INT), 3) AS success_rate,
       round(median(rel_dist_start), 3) AS rel_dist_start, round(median(rel_dist), 3) AS rel_dist,
       round(median(psnr), 1) AS psnr_db, round(avg((knn_adv = knn_tgt)::INT), 3) AS knn_adv_is_tgt
FROM match WHERE status = 'ok'
