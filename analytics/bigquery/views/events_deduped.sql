-- inventory_events with one row per event id. insertAll's insertId dedupe is best effort (and streaming retries
-- after a timeout insert again), so every other view reads this one, never the raw table. Copies of an event are
-- the same event: the first written is kept.
SELECT
  *
FROM `${project}.${dataset}.inventory_events`
WHERE TRUE -- BigQuery wants a WHERE, GROUP BY or HAVING beside QUALIFY
QUALIFY ROW_NUMBER() OVER (PARTITION BY id ORDER BY inserted_at) = 1
