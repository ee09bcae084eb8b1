-- Distributions page: the step sizes h of the lipschitz rows.
SELECT DISTINCT h FROM lipschitz WHERE h IS NOT NULL ORDER BY h
