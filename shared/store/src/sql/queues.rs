//! The store's queues: the local command inbox, the outbox's publishing side, counts files and Shopify id
//! mappings. Each write is its own (sub)transaction.

use stockroom_domain::{Location, Sku, Timestamp};

use crate::error::StoreError;
use crate::model::{CountsFile, OutboxEvent, QueuedCommand, Settled};
use crate::sql::{Conn, Query, list, query};

/// Attempts after which a queued command is parked as dead (and logged) instead of retried.
pub const COMMAND_ATTEMPTS_MAX: i64 = 20;
/// Outbox ids marked published per statement.
const MARK_IDS_MAX: usize = 500;

/// Runs `writes` in one (sub)transaction.
async fn in_transaction(c: &mut dyn Conn, writes: Vec<Query>) -> Result<Vec<u64>, StoreError> {
    c.begin().await?;
    let changed = c.execute_all(writes).await?;
    c.commit().await?;
    Ok(changed)
}

pub(crate) async fn enqueue(c: &mut dyn Conn, commands: &[QueuedCommand], now: Timestamp) -> Result<(), StoreError> {
    let writes = commands
        .iter()
        .map(|cmd| {
            query(
                "INSERT INTO command_inbox (id, type, source, ordering_key, data, created_at, attempts, next_attempt_at, state, last_error) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $6, 'pending', NULL) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&cmd.id)
            .bind(&cmd.ty)
            .bind(&cmd.source)
            .bind(&cmd.ordering_key)
            .bind(cmd.data.to_string())
            .bind(now)
        })
        .collect();
    in_transaction(c, writes).await?;
    Ok(())
}

pub(crate) async fn due_commands(
    c: &mut dyn Conn,
    limit: i64,
    now: Timestamp,
) -> Result<Vec<QueuedCommand>, StoreError> {
    let rows = c
        .fetch_all(
            query(
                "SELECT id, type, source, ordering_key, data, attempts FROM command_inbox \
                 WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY created_at, id LIMIT $2",
            )
            .bind(now)
            .bind(limit),
        )
        .await?;
    rows.iter()
        .map(|r| {
            let data = r.text(4)?;
            Ok(QueuedCommand {
                id: r.text(0)?,
                ty: r.text(1)?,
                source: r.text(2)?,
                ordering_key: r.text(3)?,
                data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("queued command: {e}")))?,
                attempts: r.int(5)?,
            })
        })
        .collect()
}

pub(crate) async fn settle(c: &mut dyn Conn, id: &str, settled: &Settled, now: Timestamp) -> Result<(), StoreError> {
    let q = match settled {
        Settled::Done => {
            query("UPDATE command_inbox SET state = 'done', attempts = attempts + 1 WHERE id = $1").bind(id)
        }
        Settled::RetryAfterMs(ms, why) => query(
            "UPDATE command_inbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(now.timestamp_micros() + ms * 1_000)
        .bind(why.as_str()),
        Settled::Dead(why) => {
            query("UPDATE command_inbox SET state = 'dead', attempts = attempts + 1, last_error = $2 WHERE id = $1")
                .bind(id)
                .bind(why.as_str())
        }
    };
    in_transaction(c, vec![q]).await?;
    Ok(())
}

/// One event into the outbox, to be published by the relay; `key` is its ordering key.
pub(crate) fn outbox_row(id: &str, key: &str, now: Timestamp, event: &serde_json::Value) -> Query {
    query("INSERT INTO outbox (id, sku, created_at, event, published_at) VALUES ($1, $2, $3, $4, NULL)")
        .bind(id)
        .bind(key)
        .bind(now)
        .bind(event.to_string())
}

pub(crate) async fn unpublished(c: &mut dyn Conn, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
    let rows = c
        .fetch_all(
            query("SELECT id, sku, event FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1").bind(limit),
        )
        .await?;
    rows.iter()
        .map(|r| {
            let event = r.text(2)?;
            Ok(OutboxEvent {
                id: r.text(0)?,
                sku: r.text(1)?,
                event: serde_json::from_str(&event).map_err(|e| StoreError::Corrupt(format!("outbox event: {e}")))?,
            })
        })
        .collect()
}

pub(crate) async fn mark_published(c: &mut dyn Conn, ids: &[String], now: Timestamp) -> Result<(), StoreError> {
    let writes = ids
        .chunks(MARK_IDS_MAX)
        .map(|chunk| {
            query(format!(
                "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND id IN ({})",
                list(2, chunk.len())
            ))
            .bind(now)
            .bind_all(chunk.iter().map(String::as_str))
        })
        .collect();
    in_transaction(c, writes).await?;
    Ok(())
}

pub(crate) async fn record_counts_file(c: &mut dyn Conn, f: &CountsFile, now: Timestamp) -> Result<bool, StoreError> {
    let q = query(
        "INSERT INTO counts_files (bucket, name, generation, size, received_at, state) VALUES ($1, $2, $3, $4, $5, 'pending') \
         ON CONFLICT (bucket, name, generation) DO NOTHING",
    )
    .bind(&f.bucket)
    .bind(&f.name)
    .bind(&f.generation)
    .bind(f.size.as_deref())
    .bind(now);
    Ok(in_transaction(c, vec![q]).await?.first() == Some(&1))
}

/// An external system's id mapped to one of ours: which table, and its two columns. Fixed names from this crate,
/// never input.
pub(crate) struct Mapping {
    pub table: &'static str,
    pub key: &'static str,
    pub value: &'static str,
}

pub(crate) const SHOPIFY_ITEMS: Mapping = Mapping { table: "shopify_items", key: "inventory_item_id", value: "sku" };
pub(crate) const SHOPIFY_LOCATIONS: Mapping =
    Mapping { table: "shopify_locations", key: "location_id", value: "location" };

/// Upserts one external id mapping.
pub(crate) async fn put_mapping(
    c: &mut dyn Conn,
    m: &Mapping,
    id: &str,
    target: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let Mapping { table, key, value } = m;
    c.begin().await?;
    let updated = c
        .execute(
            query(format!("UPDATE {table} SET {value} = $2, updated_at = $3 WHERE {key} = $1"))
                .bind(id)
                .bind(target)
                .bind(now),
        )
        .await?;
    if updated == 0 {
        c.execute(
            query(format!(
                "INSERT INTO {table} ({key}, {value}, updated_at) VALUES ($1, $2, $3) ON CONFLICT ({key}) DO NOTHING"
            ))
            .bind(id)
            .bind(target)
            .bind(now),
        )
        .await?;
    }
    c.commit().await
}

pub(crate) async fn shopify_mapping(
    c: &mut dyn Conn,
    item: &str,
    location: &str,
) -> Result<(Option<Sku>, Option<Location>), StoreError> {
    let sku = c.fetch_optional(query("SELECT sku FROM shopify_items WHERE inventory_item_id = $1").bind(item)).await?;
    let loc =
        c.fetch_optional(query("SELECT location FROM shopify_locations WHERE location_id = $1").bind(location)).await?;
    Ok((sku.map(|r| r.parsed(0, Sku::parse)).transpose()?, loc.map(|r| r.parsed(0, Location::parse)).transpose()?))
}
