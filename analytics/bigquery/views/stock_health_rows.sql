-- The contract's stock health (and stockroom_domain::analytics::health, line for line) of every row of
-- stock_figures: velocity over the trailing 7 days (returns netted out, never below 0), days of cover (null when
-- nothing sold), the projected stock-out (as_of to the second, plus the cover rounded to the second; null past
-- about 317 years), and the status: depleted before low before ok. stock_health and stock_health_by_location
-- are its two halves.
WITH velocity AS (
  SELECT
    *,
    GREATEST(units_sold_7d, 0) / 7 AS velocity_per_day
  FROM `${project}.${dataset}.stock_figures`
),
cover AS (
  SELECT
    *,
    IF(velocity_per_day > 0, GREATEST(available, 0) / velocity_per_day, NULL) AS days_of_cover
  FROM velocity
)
SELECT
  sku,
  location,
  available,
  units_sold_24h,
  units_sold_7d,
  velocity_per_day,
  days_of_cover,
  IF(
    ROUND(days_of_cover * 86400) < 1e10,
    TIMESTAMP_ADD(TIMESTAMP_TRUNC(as_of, SECOND), INTERVAL CAST(ROUND(days_of_cover * 86400) AS INT64) SECOND),
    NULL
  ) AS projected_stockout_at,
  CASE
    WHEN available <= 0 THEN 'depleted'
    WHEN days_of_cover < low_stock_days OR available <= reorder_point THEN 'low'
    ELSE 'ok'
  END AS status,
  low_stock_days,
  reorder_point,
  as_of
FROM cover
