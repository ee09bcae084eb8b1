-- Runs page: rows per result table and status (unit_rows, in memory on the dashboard's snapshot
-- connection: `probe` is the table's name).
SELECT probe AS table_name, status, sum(rows)::BIGINT AS rows FROM unit_rows
GROUP BY probe, status ORDER BY table_name, status
