-- Analytics, kept by the aggregator from inventory-events (in the cloud, BigQuery holds the same figures; see
-- analytics/bigquery/). Times are microseconds since the epoch, as in the ledger.

-- Every event the aggregator got, once: the primary key is what makes delivery exactly-once per event id.
-- Movement events fill the movement columns; `units_sold` is the contract's sales rule applied
-- (stockroom_domain::analytics::units_sold), so that windows are plain sums.
CREATE TABLE IF NOT EXISTS analytics_events (
    id               TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    received_at      BIGINT NOT NULL,
    at               BIGINT,
    sku              TEXT,
    location         TEXT,
    kind             TEXT,
    on_hand_delta    BIGINT,
    reserved_delta   BIGINT,
    committed_delta  BIGINT,
    units_sold       BIGINT NOT NULL,
    cause            TEXT,
    available        BIGINT,
    body             TEXT NOT NULL
);
-- Windows of one sku (its health, judged whenever it changes) and of every sku (the health table, top sellers),
-- covering the sums so a hot sku's week of events is read from the index alone; and the orders of a bucket.
CREATE INDEX IF NOT EXISTS analytics_events_sku_at ON analytics_events (sku, at, units_sold);
CREATE INDEX IF NOT EXISTS analytics_events_at ON analytics_events (at, sku, units_sold);
CREATE INDEX IF NOT EXISTS analytics_events_orders ON analytics_events (sku, cause, at);

-- The latest levels per (sku, location): the row of the newest movement seen, by (movement_at, movement_id).
CREATE TABLE IF NOT EXISTS analytics_levels (
    sku           TEXT NOT NULL,
    location      TEXT NOT NULL,
    on_hand       BIGINT NOT NULL,
    reserved      BIGINT NOT NULL,
    committed     BIGINT NOT NULL,
    safety_stock  BIGINT NOT NULL,
    available     BIGINT NOT NULL,
    movement_at   BIGINT NOT NULL,
    movement_id   TEXT NOT NULL,
    PRIMARY KEY (sku, location)
);

-- Sales and stock series per sku and location, and per sku ('*', not a valid location name), in 'hour' and
-- 'day' buckets: net units sold, orders (distinct reservations committing the sku), and the figures after the
-- bucket's newest movement (`last_at`).
CREATE TABLE IF NOT EXISTS analytics_series (
    sku         TEXT NOT NULL,
    location    TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    start       BIGINT NOT NULL,
    units_sold  BIGINT NOT NULL,
    orders      BIGINT NOT NULL,
    on_hand     BIGINT NOT NULL,
    available   BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    PRIMARY KEY (sku, location, bucket, start)
);

-- Each sku's health status as last judged ('*' = across locations), so that a crossing is told once.
CREATE TABLE IF NOT EXISTS analytics_status (
    sku         TEXT NOT NULL,
    location    TEXT NOT NULL,
    status      TEXT NOT NULL,
    changed_at  BIGINT NOT NULL,
    PRIMARY KEY (sku, location)
);
