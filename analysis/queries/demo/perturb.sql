-- `vitsweep demo`'s summary: perturb (normal space) displacement per norm and eps.
SELECT norm, round(eps, 4) AS eps, count(*) AS pairs, round(median(disp_over_pair), 3) AS disp_over_pair,
       round(median(random_disp_over_pair), 4) AS random_disp_over_pair
FROM perturb WHERE status = 'ok' GROUP BY norm, eps ORDER BY norm, eps
