-- GET /v1/analytics/stock-health?location=: one row per sku and location, judged on that location alone (the
-- sku's thresholds apply at each location); stock_health_rows's columns.
SELECT
  *
FROM `${project}.${dataset}.stock_health_rows`
WHERE location IS NOT NULL
