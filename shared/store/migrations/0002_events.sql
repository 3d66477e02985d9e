-- Events in and out: the local command queue, external counts, counts files and Shopify id mappings.

-- The in-process command bus, made durable: the webhooks function answers Shopify once its commands are here,
-- and a worker applies them through the same handler that /events and /pubsub/push use.
CREATE TABLE IF NOT EXISTS command_inbox (
    id               TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    source           TEXT NOT NULL,
    ordering_key     TEXT NOT NULL,
    data             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    state            TEXT NOT NULL,
    last_error       TEXT
);
CREATE INDEX IF NOT EXISTS command_inbox_due ON command_inbox (state, next_attempt_at, created_at);

-- The newest count an external system (Shopify) reported per row: an older report arriving late is ignored.
CREATE TABLE IF NOT EXISTS external_counts (
    sku          TEXT NOT NULL,
    location     TEXT NOT NULL,
    system       TEXT NOT NULL,
    observed_at  BIGINT NOT NULL,
    PRIMARY KEY (sku, location, system)
);

-- Counts files announced by Cloud Storage (object.finalized), kept until the reconciler takes them.
CREATE TABLE IF NOT EXISTS counts_files (
    bucket       TEXT NOT NULL,
    name         TEXT NOT NULL,
    generation   TEXT NOT NULL,
    size         TEXT,
    received_at  BIGINT NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (bucket, name, generation)
);

-- Shopify's inventory item and location ids (strings: they exceed 2^53) to Stockroom's sku and location.
CREATE TABLE IF NOT EXISTS shopify_items (
    inventory_item_id  TEXT PRIMARY KEY,
    sku                TEXT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS shopify_locations (
    location_id  TEXT PRIMARY KEY,
    location     TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
