-- Skus that sold in each trailing span (`span` '24h' or '7d': `occurred_at > as_of - span AND occurred_at <=
-- as_of`, as_of the query's CURRENT_TIMESTAMP()), ranked within the span: more net units, then more orders, then
-- sku. Only skus with net units above 0. top_sellers_24h and top_sellers_7d are its two spans.
WITH clock AS (
  SELECT CURRENT_TIMESTAMP() AS as_of
),
spans AS (
  SELECT '24h' AS span, TIMESTAMP_SUB(as_of, INTERVAL 24 HOUR) AS since, as_of FROM clock
  UNION ALL
  SELECT '7d' AS span, TIMESTAMP_SUB(as_of, INTERVAL 7 DAY) AS since, as_of FROM clock
),
sold AS (
  SELECT
    s.span,
    s.as_of,
    m.sku,
    SUM(m.units_sold) AS units,
    COUNT(DISTINCT IF(m.is_order, COALESCE(m.cause, m.movement_id), NULL)) AS orders
  FROM `${project}.${dataset}.movements` AS m
  JOIN spans AS s ON m.occurred_at > s.since AND m.occurred_at <= s.as_of
  WHERE m.units_sold != 0
  GROUP BY s.span, s.as_of, m.sku
  HAVING SUM(m.units_sold) > 0
)
SELECT
  span,
  ROW_NUMBER() OVER (PARTITION BY span ORDER BY units DESC, orders DESC, sku) AS rank,
  sku,
  units,
  orders,
  as_of
FROM sold
