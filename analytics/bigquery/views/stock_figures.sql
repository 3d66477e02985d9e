-- What stock health is judged on, as of the query's CURRENT_TIMESTAMP() (`as_of`): per sku and location, and per
-- sku over all its locations (location NULL): what is available now, the net units sold in the trailing 24 hours
-- and 7 days (windows are `occurred_at > as_of - span AND occurred_at <= as_of`), and the sku's thresholds.
WITH clock AS (
  SELECT CURRENT_TIMESTAMP() AS as_of
),
sold AS (
  SELECT
    sku,
    location,
    SUM(IF(occurred_at > TIMESTAMP_SUB(as_of, INTERVAL 24 HOUR), units_sold, 0)) AS units_sold_24h,
    SUM(units_sold) AS units_sold_7d
  FROM `${project}.${dataset}.movements`
  CROSS JOIN clock
  WHERE units_sold != 0
    AND occurred_at > TIMESTAMP_SUB(as_of, INTERVAL 7 DAY)
    AND occurred_at <= as_of
  GROUP BY sku, location
),
at_location AS (
  SELECT
    l.sku,
    l.location,
    l.available,
    COALESCE(s.units_sold_24h, 0) AS units_sold_24h,
    COALESCE(s.units_sold_7d, 0) AS units_sold_7d
  FROM `${project}.${dataset}.stock_levels` AS l
  LEFT JOIN sold AS s ON s.sku = l.sku AND s.location = l.location
),
both_levels AS (
  SELECT sku, location, available, units_sold_24h, units_sold_7d
  FROM at_location
  UNION ALL
  SELECT
    sku,
    CAST(NULL AS STRING) AS location,
    SUM(available) AS available,
    SUM(units_sold_24h) AS units_sold_24h,
    SUM(units_sold_7d) AS units_sold_7d
  FROM at_location
  GROUP BY sku
)
SELECT
  f.sku,
  f.location,
  f.available,
  f.units_sold_24h,
  f.units_sold_7d,
  COALESCE(p.low_stock_days, 7) AS low_stock_days,
  p.reorder_point,
  clock.as_of
FROM both_levels AS f
CROSS JOIN clock
LEFT JOIN `${project}.${dataset}.policies` AS p ON p.sku = f.sku
