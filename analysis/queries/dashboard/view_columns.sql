-- SQL page: the columns of each view, for the console's help.
SELECT table_name AS view,
       string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) AS columns
FROM information_schema.columns
WHERE table_schema = 'main' AND NOT starts_with(table_name, '_')
GROUP BY table_name ORDER BY table_name
