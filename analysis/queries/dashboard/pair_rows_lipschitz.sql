-- Pairs page: every row (every column) of one lipschitz pair, by family, direction and h.
SELECT * FROM lipschitz WHERE run_id = $run_id AND unit_id = $unit_id AND pair_id = $pair_id
ORDER BY family, direction, h
