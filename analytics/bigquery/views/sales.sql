-- Sales and stock per bucket of time (UTC), hour and day (`bucket` 'hour' or 'day'), per sku and location, and per
-- sku over all locations (location NULL): net units sold (commits less returns), orders (distinct causes of
-- commits: one reservation is one order, however many locations it drew from), and the levels right after the
-- bucket's last movement (on_hand, available; for the sku row, summed over its locations). Only buckets with
-- movements have rows; a series fills the rest with zero sales and the levels carried forward. sales_hourly and
-- sales_daily are its two buckets.
WITH buckets AS (
  SELECT 'hour' AS bucket
  UNION ALL
  SELECT 'day'
),
bucketed AS (
  SELECT
    m.*,
    b.bucket,
    IF(b.bucket = 'hour', TIMESTAMP_TRUNC(m.occurred_at, HOUR), TIMESTAMP_TRUNC(m.occurred_at, DAY)) AS start
  FROM `${project}.${dataset}.movements` AS m
  CROSS JOIN buckets AS b
),
ranked AS (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY bucket, sku, location, start ORDER BY occurred_at DESC, movement_id DESC
    ) AS nth_at_location,
    ROW_NUMBER() OVER (PARTITION BY bucket, sku, start ORDER BY occurred_at DESC, movement_id DESC) AS nth_of_sku
  FROM bucketed
)
SELECT
  bucket,
  sku,
  location,
  start,
  SUM(units_sold) AS units,
  COUNT(DISTINCT IF(is_order, COALESCE(cause, movement_id), NULL)) AS orders,
  MAX(IF(nth_at_location = 1, on_hand, NULL)) AS on_hand,
  MAX(IF(nth_at_location = 1, available, NULL)) AS available
FROM ranked
GROUP BY bucket, sku, location, start
UNION ALL
SELECT
  bucket,
  sku,
  CAST(NULL AS STRING) AS location,
  start,
  SUM(units_sold) AS units,
  COUNT(DISTINCT IF(is_order, COALESCE(cause, movement_id), NULL)) AS orders,
  MAX(IF(nth_of_sku = 1, sku_on_hand, NULL)) AS on_hand,
  MAX(IF(nth_of_sku = 1, sku_available, NULL)) AS available
FROM ranked
GROUP BY bucket, sku, start
