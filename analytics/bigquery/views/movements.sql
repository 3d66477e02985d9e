-- The ledger movements the events carried, once each, with the sku's totals over all its locations right after
-- each movement (each location's latest levels, summed): a running sum of every location's change.
SELECT
  * EXCEPT (prev_on_hand, prev_available),
  SUM(on_hand - prev_on_hand) OVER (
    PARTITION BY sku ORDER BY occurred_at, movement_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
  ) AS sku_on_hand,
  SUM(available - prev_available) OVER (
    PARTITION BY sku ORDER BY occurred_at, movement_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
  ) AS sku_available
FROM (
  SELECT
    id,
    movement_id,
    type,
    occurred_at,
    sku,
    location,
    kind,
    on_hand_delta,
    reserved_delta,
    committed_delta,
    cause,
    on_hand,
    reserved,
    committed,
    safety_stock,
    available,
    units_sold,
    is_order,
    COALESCE(LAG(on_hand) OVER (PARTITION BY sku, location ORDER BY occurred_at, movement_id), 0) AS prev_on_hand,
    COALESCE(LAG(available) OVER (PARTITION BY sku, location ORDER BY occurred_at, movement_id), 0) AS prev_available
  FROM `${project}.${dataset}.events_deduped`
  WHERE movement_id IS NOT NULL
)
