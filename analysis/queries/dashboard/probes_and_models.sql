-- Pairs page: the models with rows in each result table.
SELECT DISTINCT probe, model FROM unit_rows ORDER BY probe, model
