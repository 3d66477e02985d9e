-- GET /v1/analytics/top-sellers?window=7d: the 7d span of `top_sellers` (rank, sku, units, orders, as_of).
SELECT
  * EXCEPT (span)
FROM `${project}.${dataset}.top_sellers`
WHERE span = '7d'
