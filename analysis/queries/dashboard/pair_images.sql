-- Pairs page: the gallery PNGs of one pair of one probe.
SELECT coalesce(variant, '') AS variant, src_png, adv_png, tgt_png FROM images
WHERE probe = $probe AND run_id = $run_id AND unit_id = $unit_id AND pair_id = $pair_id
ORDER BY variant
