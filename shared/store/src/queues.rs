//! The store's queues: the local command inbox, the outbox's publishing side, counts files and Shopify id
//! mappings. Plain statements; each runs in whatever transaction the caller is in (the SQLite writer's batch,
//! or autocommit on PostgreSQL).

use sqlx::{AnyConnection, AssertSqlSafe, Row};
use stockroom_domain::{Location, Sku};

use crate::error::StoreError;
use crate::model::{CountsFile, OutboxEvent, QueuedCommand, Settled};
use crate::sql::{list, now, parse};

/// Attempts after which a queued command is parked as dead (and logged) instead of retried.
pub const COMMAND_ATTEMPTS_MAX: i64 = 20;

pub(crate) async fn enqueue(conn: &mut AnyConnection, commands: &[QueuedCommand]) -> Result<(), StoreError> {
    let at = now().timestamp_micros();
    for c in commands {
        sqlx::query(
            "INSERT INTO command_inbox (id, type, source, ordering_key, data, created_at, attempts, next_attempt_at, state, last_error) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $6, 'pending', NULL) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.ty)
        .bind(&c.source)
        .bind(&c.ordering_key)
        .bind(c.data.to_string())
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn due_commands(conn: &mut AnyConnection, limit: i64) -> Result<Vec<QueuedCommand>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, type, source, ordering_key, data, attempts FROM command_inbox \
         WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY created_at, id LIMIT $2",
    )
    .bind(now().timestamp_micros())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let data: String = r.try_get(4)?;
            Ok(QueuedCommand {
                id: r.try_get(0)?,
                ty: r.try_get(1)?,
                source: r.try_get(2)?,
                ordering_key: r.try_get(3)?,
                data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("queued command: {e}")))?,
                attempts: r.try_get(5)?,
            })
        })
        .collect()
}

pub(crate) async fn settle(conn: &mut AnyConnection, id: &str, settled: &Settled) -> Result<(), StoreError> {
    let at = now().timestamp_micros();
    let q = match settled {
        Settled::Done => {
            sqlx::query("UPDATE command_inbox SET state = 'done', attempts = attempts + 1 WHERE id = $1").bind(id)
        }
        Settled::RetryAfterMs(ms, why) => sqlx::query(
            "UPDATE command_inbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(at + ms * 1_000)
        .bind(why.as_str()),
        Settled::Dead(why) => sqlx::query(
            "UPDATE command_inbox SET state = 'dead', attempts = attempts + 1, last_error = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(why.as_str()),
    };
    q.execute(&mut *conn).await?;
    Ok(())
}

pub(crate) async fn unpublished(conn: &mut AnyConnection, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
    let rows = sqlx::query("SELECT id, sku, event FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1")
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let event: String = r.try_get(2)?;
            Ok(OutboxEvent {
                id: r.try_get(0)?,
                sku: r.try_get(1)?,
                event: serde_json::from_str(&event).map_err(|e| StoreError::Corrupt(format!("outbox event: {e}")))?,
            })
        })
        .collect()
}

pub(crate) async fn mark_published(conn: &mut AnyConnection, ids: &[String]) -> Result<(), StoreError> {
    let at = now().timestamp_micros();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND id IN ({})",
            list(2, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(at);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn record_counts_file(conn: &mut AnyConnection, f: &CountsFile) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO counts_files (bucket, name, generation, size, received_at, state) VALUES ($1, $2, $3, $4, $5, 'pending') \
         ON CONFLICT (bucket, name, generation) DO NOTHING",
    )
    .bind(&f.bucket)
    .bind(&f.name)
    .bind(&f.generation)
    .bind(f.size.as_deref())
    .bind(now().timestamp_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Upserts one external id mapping. `table`, `key` and `value` are fixed names from this crate, never input.
pub(crate) async fn put_mapping(
    conn: &mut AnyConnection,
    table: &'static str,
    key: &'static str,
    value: &'static str,
    id: &str,
    target: &str,
) -> Result<(), StoreError> {
    let at = now().timestamp_micros();
    let updated =
        sqlx::query(AssertSqlSafe(format!("UPDATE {table} SET {value} = $2, updated_at = $3 WHERE {key} = $1")))
            .bind(id)
            .bind(target)
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if updated == 0 {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} ({key}, {value}, updated_at) VALUES ($1, $2, $3) ON CONFLICT ({key}) DO NOTHING"
        )))
        .bind(id)
        .bind(target)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn shopify_mapping(
    conn: &mut AnyConnection,
    item: &str,
    location: &str,
) -> Result<(Option<Sku>, Option<Location>), StoreError> {
    let sku: Option<(String,)> = sqlx::query_as("SELECT sku FROM shopify_items WHERE inventory_item_id = $1")
        .bind(item)
        .fetch_optional(&mut *conn)
        .await?;
    let loc: Option<(String,)> = sqlx::query_as("SELECT location FROM shopify_locations WHERE location_id = $1")
        .bind(location)
        .fetch_optional(&mut *conn)
        .await?;
    Ok((sku.map(|(s,)| parse(Sku::parse, s)).transpose()?, loc.map(|(l,)| parse(Location::parse, l)).transpose()?))
}
