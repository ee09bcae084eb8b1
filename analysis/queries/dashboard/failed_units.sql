-- Runs page: units that failed after their retries, with their errors (the first $limit).
SELECT run_id, unit_id, model, probe, attempts, error FROM units
WHERE status = 'error' ORDER BY run_id, unit_id LIMIT $limit
