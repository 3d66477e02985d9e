-- Stockroom's analytics tables in BigQuery. GoogleSQL DDL; `${project}` and `${dataset}` are substituted when the
-- file is applied (stockroom-gcp's `BigQuery::apply_schema`, later terraform's `templatefile`). Idempotent: run it
-- as often as you like. Columns are only ever added (BigQuery cannot drop or retype a column in place).

-- Every event from `inventory-events`, as the aggregator streamed it (tabledata.insertAll, insertId = event id).
-- Streaming dedupe by insertId is best effort, so the same event may be here more than once: every view reads
-- `events_deduped`, never this table. One row an event; movement events fill the movement columns, the others
-- (stock.low, reconciliation.completed, ...) leave them null.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.inventory_events` (
  id STRING NOT NULL OPTIONS (description = 'CloudEvent id (for a movement event, the movement id)'),
  type STRING NOT NULL OPTIONS (description = 'CloudEvent type, e.g. dev.stockroom.reservation.committed.v1'),
  -- Not `at`: AT is a reserved word in GoogleSQL (and in DuckDB, under the emulator).
  occurred_at TIMESTAMP NOT NULL OPTIONS (description = 'time of the movement, else of the event, else when the row was written'),
  movement_id STRING OPTIONS (description = 'the ledger movement the event carries'),
  sku STRING,
  location STRING,
  kind STRING OPTIONS (description = 'movement kind: adjustment, hold, commit, fulfil, release, expire, cycle_count, ...'),
  on_hand_delta INT64,
  reserved_delta INT64,
  committed_delta INT64,
  cause STRING OPTIONS (description = 'what caused the movement; reservation:<id> for reservation movements (orders count these)'),
  on_hand INT64 OPTIONS (description = 'levels of (sku, location) right after the movement'),
  reserved INT64,
  committed INT64,
  safety_stock INT64,
  available INT64,
  units_sold INT64 NOT NULL OPTIONS (description = 'net units sold by this movement: a commit sells, a release out of committed is a return (negative)'),
  is_order BOOL NOT NULL OPTIONS (description = 'a commit: counts toward orders (distinct causes)'),
  event JSON OPTIONS (description = 'the whole CloudEvent, structured mode'),
  inserted_at TIMESTAMP NOT NULL OPTIONS (description = 'when the aggregator wrote the row (its clock)')
)
PARTITION BY DATE(occurred_at)
CLUSTER BY sku
OPTIONS (description = 'Stockroom inventory events, raw; read through the events_deduped view');

-- Each sku's thresholds, as the ledger's `PUT /v1/skus/{sku}/policy` left them: appended on every change, the
-- newest row per sku wins (view `policies`). Null means the default (low_stock_days 7, no reorder point).
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.sku_policies` (
  sku STRING NOT NULL,
  low_stock_days INT64,
  reorder_point INT64,
  updated_at TIMESTAMP NOT NULL
)
CLUSTER BY sku
OPTIONS (description = 'Stockroom sku policies, appended on change; read through the policies view');
