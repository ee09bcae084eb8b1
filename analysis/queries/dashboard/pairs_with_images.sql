-- Pairs page: the pairs of one probe that have gallery images (a few per unit).
SELECT DISTINCT run_id, unit_id, pair_id, model FROM images WHERE probe = $probe
