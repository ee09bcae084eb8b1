-- `vitsweep demo`'s summary: lipschitz (directional) estimates per direction family at the smallest step.
SELECT family, count(*) AS rows, round(median(l_jvp), 3) AS median_l_jvp, round(max(l_jvp), 3) AS max_l_jvp
FROM lipschitz WHERE status = 'ok' AND h = (SELECT min(h) FROM lipschitz) GROUP BY family ORDER BY family
