-- `vitsweep demo`'s summary: the model settings the demo ran, with their units.
SELECT model, weights, embed, count(*) AS units FROM units GROUP BY ALL ORDER BY ALL
