-- description: Gallery: source, matched and target PNG bytes with the match's numbers.
-- param: run_id = NULL | only this run (NULL: all runs)
-- param: model = NULL | only this model (NULL: all models)
-- param: weights = NULL | only these weights (NULL: all)
-- param: probe = match | images of this probe
-- param: limit = 8 | at most this many triples per model and weights
WITH unit_weights AS (
    SELECT DISTINCT run_id, unit_id, weights FROM units
    UNION SELECT DISTINCT run_id, unit_id, weights FROM match
    UNION SELECT DISTINCT run_id, unit_id, weights FROM perturb
),
joined AS (
    SELECT i.model, coalesce(m.weights, w.weights) AS weights, i.probe, i.variant, i.pair_id, m.src_key, m.tgt_key,
           m.success, m.rel_dist, m.psnr, m.ssim, m.pred_src, m.pred_tgt, m.pred_adv,
           i.src_png, i.adv_png, i.tgt_png, i.unit_id, i.run_id
    FROM images AS i
    LEFT JOIN match AS m
      ON m.run_id = i.run_id AND m.unit_id = i.unit_id AND m.pair_id = i.pair_id
    LEFT JOIN unit_weights AS w
      ON w.run_id = i.run_id AND w.unit_id = i.unit_id
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, weights ORDER BY run_id, unit_id, pair_id, variant) AS k
    FROM joined
    WHERE ($run_id IS NULL OR run_id = $run_id)
      AND ($model IS NULL OR model = $model)
      AND ($weights IS NULL OR weights = $weights)
      AND ($probe IS NULL OR probe = $probe)
)
SELECT * EXCLUDE (k)
FROM ranked
WHERE k <= CAST($limit AS BIGINT)
ORDER BY model, weights, run_id, unit_id, pair_id, variant
