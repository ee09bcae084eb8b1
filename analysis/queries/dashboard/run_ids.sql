-- The run_id values in the results (a run's id, not its folder name); unit_rows: every unit with
-- result rows (a snapshot: no second scan of the result files).
SELECT run_id FROM (SELECT DISTINCT run_id FROM unit_rows UNION SELECT DISTINCT run_id FROM units)
ORDER BY run_id
