-- The report's match figure: PSNR of successful ok match rows, per setting.
-- Histogram bins as numpy's histogram_bin_edges draws them: `bins` equal widths between the
-- finite minimum and maximum of each setting (a range of 1 around a single value).
WITH v AS (
    SELECT config_hash, 'psnr' AS part, psnr AS x
    FROM match_ok(NULL, NULL, NULL, NULL) WHERE success AND isfinite(psnr)
),
r AS (
    SELECT config_hash, count(*) AS n, min(x) AS lo, max(x) AS hi,
           least(30, greatest(5, count(*)))::INTEGER AS bins
    FROM v GROUP BY config_hash
),
e AS (
    SELECT config_hash, n, bins,
           CASE WHEN hi > lo THEN lo ELSE lo - 0.5 END AS lo,
           CASE WHEN hi > lo THEN (hi - lo) / bins ELSE 1.0 / bins END AS width
    FROM r
)
SELECT v.config_hash, v.part, e.lo, e.width, e.bins,
       least(CAST(floor((v.x - e.lo) / e.width) AS INTEGER), e.bins - 1) AS b, count(*) AS n
FROM v JOIN e USING (config_hash)
GROUP BY ALL ORDER BY v.config_hash, v.part, b
