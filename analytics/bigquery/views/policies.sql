-- Each sku's current thresholds: the newest sku_policies row. Null means the default (low_stock_days 7, no
-- reorder point); skus without a row take the defaults too.
SELECT
  sku,
  low_stock_days,
  reorder_point,
  updated_at
FROM `${project}.${dataset}.sku_policies`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY sku ORDER BY updated_at DESC) = 1
