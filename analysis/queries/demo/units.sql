-- `vitsweep demo`'s summary: units, pairs, pair errors and seconds per probe.
SELECT probe, count(*) AS units, sum(n_pairs) AS pairs, sum(n_error) AS pair_errors,
       round(sum(seconds), 1) AS seconds
FROM units GROUP BY probe ORDER BY probe
