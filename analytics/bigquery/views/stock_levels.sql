-- The current levels of each (sku, location): those right after its latest movement, by (time, movement id).
SELECT
  sku,
  location,
  on_hand,
  reserved,
  committed,
  safety_stock,
  available,
  occurred_at AS movement_at,
  movement_id
FROM `${project}.${dataset}.movements`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY sku, location ORDER BY occurred_at DESC, movement_id DESC) = 1
