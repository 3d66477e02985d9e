-- GET /v1/analytics/stock-health: one row per sku, its figures summed over its locations (stock_health_rows's
-- columns but `location`).
SELECT
  * EXCEPT (location)
FROM `${project}.${dataset}.stock_health_rows`
WHERE location IS NULL
