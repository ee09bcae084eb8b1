-- Pairs page: the row (every column) of one equivalence pair.
SELECT * FROM equivalence WHERE run_id = $run_id AND unit_id = $unit_id AND pair_id = $pair_id
