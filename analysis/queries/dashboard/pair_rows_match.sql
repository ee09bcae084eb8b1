-- Pairs page: every row (every column) of one match pair.
SELECT * FROM match WHERE run_id = $run_id AND unit_id = $unit_id AND pair_id = $pair_id
