-- The ledger. One schema for SQLite and PostgreSQL, inside what Spanner's PostgreSQL dialect accepts:
-- ids are made by the application (UUIDv7 text), times are microseconds since the epoch (BIGINT), and there are
-- no sequences, triggers, stored procedures, advisory locks or LISTEN/NOTIFY.

CREATE TABLE IF NOT EXISTS locations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    priority    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Stored figures per (sku, location). `reserved` still counts holds that lapsed but were not booked yet;
-- readers subtract those (allocations with state 'held' and expires_at <= now), so expiry needs no sweeper.
CREATE TABLE IF NOT EXISTS levels (
    sku         TEXT NOT NULL,
    location    TEXT NOT NULL,
    on_hand     BIGINT NOT NULL,
    reserved    BIGINT NOT NULL,
    committed   BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (sku, location)
);

CREATE TABLE IF NOT EXISTS sku_policies (
    sku             TEXT PRIMARY KEY,
    low_stock_days  BIGINT,
    reorder_point   BIGINT,
    safety_stock    BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS movements (
    id               TEXT PRIMARY KEY,
    at               BIGINT NOT NULL,
    sku              TEXT NOT NULL,
    location         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    on_hand_delta    BIGINT NOT NULL,
    reserved_delta   BIGINT NOT NULL,
    committed_delta  BIGINT NOT NULL,
    reason           TEXT NOT NULL,
    reference        TEXT,
    cause            TEXT
);
CREATE INDEX IF NOT EXISTS movements_by_sku ON movements (sku, location, id);

CREATE TABLE IF NOT EXISTS reservations (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    reference   TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_due ON reservations (status, expires_at);

-- `line_no` and `alloc_no` keep the order sourcing chose; `expires_at` and `reference` are copied from the
-- reservation so that a hold can find and book lapsed allocations on the rows it locked.
CREATE TABLE IF NOT EXISTS allocations (
    reservation_id  TEXT NOT NULL,
    line_no         BIGINT NOT NULL,
    alloc_no        BIGINT NOT NULL,
    sku             TEXT NOT NULL,
    location        TEXT NOT NULL,
    line_quantity   BIGINT NOT NULL,
    quantity        BIGINT NOT NULL,
    committed       BIGINT NOT NULL,
    state           TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    reference       TEXT,
    PRIMARY KEY (reservation_id, line_no, alloc_no)
);
CREATE INDEX IF NOT EXISTS allocations_lapsing ON allocations (sku, location, state, expires_at);

-- Idempotency: a claim (state 'in_flight', taken at claimed_at) made before the work, turned into the stored
-- answer in the same transaction as the effect. A claim older than the lease may be taken over.
CREATE TABLE IF NOT EXISTS idempotency (
    key           TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL,
    claim         TEXT NOT NULL,
    claimed_at    BIGINT NOT NULL,
    status        BIGINT,
    body          TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- The transactional outbox: one CloudEvent per movement, written with the movement.
CREATE TABLE IF NOT EXISTS outbox (
    id            TEXT PRIMARY KEY,
    sku           TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    event         TEXT NOT NULL,
    published_at  BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at, id);
