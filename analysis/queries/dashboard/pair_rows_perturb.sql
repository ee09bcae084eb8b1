-- Pairs page: every row (every column) of one perturb pair, by norm and ε.
SELECT * FROM perturb WHERE run_id = $run_id AND unit_id = $unit_id AND pair_id = $pair_id
ORDER BY norm, eps
