-- GET /v1/analytics/top-sellers?window=24h: the 24h span of `top_sellers` (rank, sku, units, orders, as_of).
SELECT
  * EXCEPT (span)
FROM `${project}.${dataset}.top_sellers`
WHERE span = '24h'
