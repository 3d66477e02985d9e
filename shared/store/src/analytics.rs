//! The analytics ports and their SQL implementation: what the aggregator records from `inventory-events`, and
//! the figures the analytics endpoints read back.
//!
//! Recording keeps, in the ledger's own database: every event once (`analytics_events`, the raw table, which
//! also makes delivery exactly-once per event id), the latest levels per (sku, location), per-sku and
//! per-location series in hour and day buckets, and each sku's last health status. A status that changes
//! leaves as a `stock.low`, `stock.depleted` or `stock.replenished` event through the outbox, in the same
//! transaction, so one crossing is one event however often its cause is delivered.

use async_trait::async_trait;
use serde_json::Value;
use stockroom_domain::Timestamp;
use stockroom_domain::analytics::{Bucket, Health, SalesPoint, TopSeller, Window};

use crate::error::StoreError;

/// A CloudEvent from `inventory-events` as the aggregator got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedEvent {
    /// The CloudEvent id (for movement events, the movement id).
    pub id: String,
    pub ty: String,
    /// The whole event, structured mode.
    pub body: Value,
    /// The movement it carries, if it is a movement event.
    pub movement: Option<ObservedMovement>,
}

/// A movement event's movement and the row's levels right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMovement {
    pub id: String,
    pub at: Timestamp,
    pub sku: String,
    pub location: String,
    pub kind: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub committed_delta: i64,
    /// What caused it: for reservation movements `reservation:<id>`, which is what `orders` counts.
    pub cause: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub safety_stock: i64,
    pub available: i64,
}

/// What one `record` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    /// Events seen for the first time.
    pub recorded: usize,
    /// Events seen before (left alone).
    pub duplicates: usize,
    /// Threshold events written to the outbox.
    pub crossings: usize,
}

/// The figures behind `/v1/analytics/*`: from the embedded tables locally, from BigQuery's views in the cloud.
#[async_trait]
pub trait AnalyticsReader: Send + Sync + 'static {
    /// One row per sku (figures summed over locations), or per sku at `location`; ordered by sku.
    async fn stock_health(&self, location: Option<&str>, now: Timestamp) -> Result<Vec<Health>, StoreError>;
    /// The sku's sales summed over locations, one point per bucket from `from`'s bucket to `to`'s, zeros
    /// included. The caller bounds the span (`stockroom_domain::analytics::series_starts`).
    async fn sales(
        &self,
        sku: &str,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SalesPoint>, StoreError>;
    /// Best sellers over the trailing window, ranked by `rank_top_sellers`.
    async fn top_sellers(&self, window: Window, limit: i64, now: Timestamp) -> Result<Vec<TopSeller>, StoreError>;
}

/// Where the aggregator copies events for the cloud's analytics (BigQuery), beside its own tables. Writes must
/// be idempotent per event id (BigQuery: `insertId`, and views that keep one row per id).
#[async_trait]
pub trait AnalyticsSink: Send + Sync + 'static {
    async fn write(&self, events: &[ObservedEvent]) -> Result<(), StoreError>;
}

// ---------------------------------------------------------------------------------------------------------------
// The embedded implementation (SQLite and PostgreSQL, the same SQL)
// ---------------------------------------------------------------------------------------------------------------

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{AnyConnection, Connection, Row};
use stockroom_domain::analytics::{
    HealthStatus, Thresholds, VELOCITY_WINDOW_DAYS, fill_series, health, is_order, rank_top_sellers, series_starts,
    units_sold,
};

use crate::sql::Dialect;

/// The series row of a sku across all its locations.
const ALL_LOCATIONS: &str = "*";
const DAY_MICROS: i64 = 86_400_000_000;
/// Ids per duplicate lookup: well under both databases' parameter limits.
const ID_LOOKUP_MAX: usize = 500;

/// Records events once each, in one transaction: the raw row, and for each new movement its levels and series;
/// then judges each touched sku's health and writes one threshold event per changed status to the outbox.
/// Each touched sku's status row is locked first (in sku order), so concurrent recorders of one sku take turns
/// and never both tell the same crossing.
pub(crate) async fn record(
    conn: &mut AnyConnection,
    dialect: Dialect,
    events: &[ObservedEvent],
    now: Timestamp,
) -> Result<Recorded, StoreError> {
    // Redeliveries are common (Pub/Sub is at-least-once): leave out events recorded before without taking any
    // lock. The insert below stays the arbiter for events that race in now.
    let known = recorded_before(conn, events).await?;
    let fresh: Vec<&ObservedEvent> = events.iter().filter(|e| !known.contains(e.id.as_str())).collect();
    let mut done = Recorded { duplicates: events.len() - fresh.len(), ..Recorded::default() };
    if fresh.is_empty() {
        return Ok(done);
    }
    let mut tx = conn.begin().await?;
    let skus: BTreeSet<&str> = fresh.iter().filter_map(|e| e.movement.as_ref()).map(|m| m.sku.as_str()).collect();
    let mut status = BTreeMap::new();
    for sku in &skus {
        sqlx::query(
            "INSERT INTO analytics_status (sku, location, status, changed_at) VALUES ($1, $2, 'ok', 0) \
             ON CONFLICT (sku, location) DO NOTHING",
        )
        .bind(*sku)
        .bind(ALL_LOCATIONS)
        .execute(&mut *tx)
        .await?;
        let sql =
            format!("SELECT status FROM analytics_status WHERE sku = $1 AND location = $2{}", dialect.for_update());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(*sku).bind(ALL_LOCATIONS).fetch_one(&mut *tx).await?;
        let s: String = row.try_get(0)?;
        status.insert(*sku, HealthStatus::parse(&s).unwrap_or(HealthStatus::Ok));
    }

    // The newest new movement of each sku: the one a crossing is laid at.
    let mut crossed_by: HashMap<&str, &ObservedMovement> = HashMap::new();
    for e in fresh {
        if !insert_raw(&mut tx, e, now).await? {
            done.duplicates += 1;
            continue;
        }
        done.recorded += 1;
        if let Some(m) = &e.movement {
            apply_movement(&mut tx, m).await?;
            crossed_by
                .entry(m.sku.as_str())
                .and_modify(|last| {
                    if (m.at, &m.id) > (last.at, &last.id) {
                        *last = m;
                    }
                })
                .or_insert(m);
        }
    }

    for (sku, movement) in crossed_by {
        let thresholds = thresholds(&mut tx, sku).await?;
        let (available, sold_24h, sold_7d) = figures(&mut tx, sku, None, now).await?;
        let h = health(sku, available, sold_24h, sold_7d, thresholds, now);
        let before = status.get(sku).copied().unwrap_or(HealthStatus::Ok);
        if h.status == before {
            continue;
        }
        sqlx::query("UPDATE analytics_status SET status = $1, changed_at = $2 WHERE sku = $3 AND location = $4")
            .bind(h.status.as_str())
            .bind(now.timestamp_micros())
            .bind(sku)
            .bind(ALL_LOCATIONS)
            .execute(&mut *tx)
            .await?;
        let id = uuid::Uuid::now_v7().to_string();
        let event = crate::event::threshold_event(&id, &h, before, thresholds, Some(&movement.id), now);
        sqlx::query("INSERT INTO outbox (id, sku, created_at, event, published_at) VALUES ($1, $2, $3, $4, NULL)")
            .bind(&id)
            .bind(sku)
            .bind(now.timestamp_micros())
            .bind(event.to_string())
            .execute(&mut *tx)
            .await?;
        done.crossings += 1;
    }
    tx.commit().await?;
    Ok(done)
}

/// Ids of `events` recorded already.
async fn recorded_before(conn: &mut AnyConnection, events: &[ObservedEvent]) -> Result<BTreeSet<String>, StoreError> {
    let mut known = BTreeSet::new();
    for chunk in events.chunks(ID_LOOKUP_MAX) {
        let sql = format!("SELECT id FROM analytics_events WHERE id IN ({})", crate::sql::list(1, chunk.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(&e.id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            known.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(known)
}

/// The raw row; `false` when the event was recorded before.
async fn insert_raw(conn: &mut AnyConnection, e: &ObservedEvent, now: Timestamp) -> Result<bool, StoreError> {
    let m = e.movement.as_ref();
    let inserted = sqlx::query(
        "INSERT INTO analytics_events (id, type, received_at, at, sku, location, kind, on_hand_delta, reserved_delta, \
         committed_delta, units_sold, cause, available, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&e.id)
    .bind(&e.ty)
    .bind(now.timestamp_micros())
    .bind(m.map(|m| m.at.timestamp_micros()))
    .bind(m.map(|m| m.sku.clone()))
    .bind(m.map(|m| m.location.clone()))
    .bind(m.map(|m| m.kind.clone()))
    .bind(m.map(|m| m.on_hand_delta))
    .bind(m.map(|m| m.reserved_delta))
    .bind(m.map(|m| m.committed_delta))
    .bind(m.map_or(0, |m| units_sold(&m.kind, m.committed_delta)))
    .bind(m.and_then(|m| m.cause.clone()))
    .bind(m.map(|m| m.available))
    .bind(e.body.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A new movement's levels (when it is the newest of its row) and its four series rows.
async fn apply_movement(conn: &mut AnyConnection, m: &ObservedMovement) -> Result<(), StoreError> {
    let at = m.at.timestamp_micros();
    sqlx::query(
        "INSERT INTO analytics_levels (sku, location, on_hand, reserved, committed, safety_stock, available, \
         movement_at, movement_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (sku, location) DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved, \
         committed = excluded.committed, safety_stock = excluded.safety_stock, available = excluded.available, \
         movement_at = excluded.movement_at, movement_id = excluded.movement_id \
         WHERE analytics_levels.movement_at < excluded.movement_at \
            OR (analytics_levels.movement_at = excluded.movement_at AND analytics_levels.movement_id < excluded.movement_id)",
    )
    .bind(&m.sku)
    .bind(&m.location)
    .bind(m.on_hand)
    .bind(m.reserved)
    .bind(m.committed)
    .bind(m.safety_stock)
    .bind(m.available)
    .bind(at)
    .bind(&m.id)
    .execute(&mut *conn)
    .await?;
    let totals = sqlx::query(
        "SELECT CAST(COALESCE(SUM(on_hand), 0) AS BIGINT), CAST(COALESCE(SUM(available), 0) AS BIGINT) \
         FROM analytics_levels WHERE sku = $1",
    )
    .bind(&m.sku)
    .fetch_one(&mut *conn)
    .await?;
    let (total_on_hand, total_available): (i64, i64) = (totals.try_get(0)?, totals.try_get(1)?);
    let sold = units_sold(&m.kind, m.committed_delta);
    let order = i64::from(is_order(&m.kind));
    for bucket in [Bucket::Hour, Bucket::Day] {
        let start = bucket.start_of(at);
        // An order split across locations is one order of the sku: count it in the total row once.
        let first_of_order = match (&m.cause, order) {
            (Some(cause), 1) => {
                let earlier = sqlx::query(
                    "SELECT COUNT(*) FROM analytics_events WHERE sku = $1 AND cause = $2 AND kind = 'commit' \
                     AND at >= $3 AND at < $4 AND id <> $5",
                )
                .bind(&m.sku)
                .bind(cause)
                .bind(start)
                .bind(start + bucket.micros())
                .bind(&m.id)
                .fetch_one(&mut *conn)
                .await?;
                i64::from(earlier.try_get::<i64, _>(0)? == 0)
            }
            _ => order,
        };
        for (location, orders, on_hand, available) in [
            (m.location.as_str(), order, m.on_hand, m.available),
            (ALL_LOCATIONS, first_of_order, total_on_hand, total_available),
        ] {
            sqlx::query(
                "INSERT INTO analytics_series (sku, location, bucket, start, units_sold, orders, on_hand, available, \
                 last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (sku, location, bucket, start) DO UPDATE SET \
                 units_sold = analytics_series.units_sold + excluded.units_sold, \
                 orders = analytics_series.orders + excluded.orders, \
                 on_hand = CASE WHEN excluded.last_at >= analytics_series.last_at THEN excluded.on_hand ELSE analytics_series.on_hand END, \
                 available = CASE WHEN excluded.last_at >= analytics_series.last_at THEN excluded.available ELSE analytics_series.available END, \
                 last_at = CASE WHEN excluded.last_at >= analytics_series.last_at THEN excluded.last_at ELSE analytics_series.last_at END",
            )
            .bind(&m.sku)
            .bind(location)
            .bind(bucket.as_str())
            .bind(start)
            .bind(sold)
            .bind(orders)
            .bind(on_hand)
            .bind(available)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn thresholds(conn: &mut AnyConnection, sku: &str) -> Result<Thresholds, StoreError> {
    let row = sqlx::query("SELECT low_stock_days, reorder_point FROM sku_policies WHERE sku = $1")
        .bind(sku)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Thresholds::from_policy(r.try_get(0)?, r.try_get(1)?),
        None => Thresholds::default(),
    })
}

/// `(available, sold in the trailing 24 h, sold in the trailing 7 days)` of one sku, at one location or across
/// all of them.
async fn figures(
    conn: &mut AnyConnection,
    sku: &str,
    location: Option<&str>,
    now: Timestamp,
) -> Result<(i64, i64, i64), StoreError> {
    let at_filter = if location.is_some() { " AND location = $2" } else { "" };
    let available = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COALESCE(SUM(available), 0) AS BIGINT) FROM analytics_levels WHERE sku = $1{at_filter}"
    )))
    .bind(sku)
    .bind(location)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    let sales = sold_by_sku(conn, Some(sku), location, now).await?;
    let (day, week) = sales.get(sku).copied().unwrap_or_default();
    Ok((available, day, week))
}

/// Units sold per sku in the trailing 24 hours and 7 days, for one sku or all, at one location or all.
async fn sold_by_sku(
    conn: &mut AnyConnection,
    sku: Option<&str>,
    location: Option<&str>,
    now: Timestamp,
) -> Result<HashMap<String, (i64, i64)>, StoreError> {
    let now_us = now.timestamp_micros();
    // PostgreSQL sums BIGINTs as NUMERIC: cast back.
    let mut sql = "SELECT sku, CAST(COALESCE(SUM(CASE WHEN at > $1 THEN units_sold ELSE 0 END), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(units_sold), 0) AS BIGINT) FROM analytics_events \
                   WHERE units_sold <> 0 AND at > $2 AND at <= $3"
        .to_owned();
    let mut n = 3;
    if sku.is_some() {
        n += 1;
        sql.push_str(&format!(" AND sku = ${n}"));
    }
    if location.is_some() {
        n += 1;
        sql.push_str(&format!(" AND location = ${n}"));
    }
    sql.push_str(" GROUP BY sku");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_us - DAY_MICROS)
        .bind(now_us - VELOCITY_WINDOW_DAYS * DAY_MICROS)
        .bind(now_us);
    if let Some(sku) = sku {
        q = q.bind(sku);
    }
    if let Some(location) = location {
        q = q.bind(location);
    }
    let mut out = HashMap::new();
    for row in q.fetch_all(&mut *conn).await? {
        out.insert(row.try_get::<String, _>(0)?, (row.try_get(1)?, row.try_get(2)?));
    }
    Ok(out)
}

pub(crate) async fn stock_health(
    conn: &mut AnyConnection,
    location: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Health>, StoreError> {
    let at_filter = if location.is_some() { " WHERE location = $1" } else { "" };
    let available = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT sku, CAST(COALESCE(SUM(available), 0) AS BIGINT) FROM analytics_levels{at_filter} \
         GROUP BY sku ORDER BY sku"
    )))
    .bind(location)
    .fetch_all(&mut *conn)
    .await?;
    let sold = sold_by_sku(conn, None, location, now).await?;
    let mut policies = HashMap::new();
    for row in sqlx::query("SELECT sku, low_stock_days, reorder_point FROM sku_policies").fetch_all(&mut *conn).await? {
        policies.insert(row.try_get::<String, _>(0)?, Thresholds::from_policy(row.try_get(1)?, row.try_get(2)?));
    }
    available
        .into_iter()
        .map(|row| {
            let sku: String = row.try_get(0)?;
            let (day, week) = sold.get(&sku).copied().unwrap_or_default();
            let t = policies.get(&sku).copied().unwrap_or_default();
            Ok(health(&sku, row.try_get(1)?, day, week, t, now))
        })
        .collect()
}

pub(crate) async fn sales(
    conn: &mut AnyConnection,
    sku: &str,
    bucket: Bucket,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<SalesPoint>, StoreError> {
    let Some(starts) = series_starts(bucket, from, to) else {
        return Ok(Vec::new());
    };
    let (first, last) = (starts.first().copied().unwrap_or_default(), starts.last().copied().unwrap_or_default());
    let rows = sqlx::query(
        "SELECT start, units_sold, orders FROM analytics_series \
         WHERE sku = $1 AND location = $2 AND bucket = $3 AND start >= $4 AND start <= $5",
    )
    .bind(sku)
    .bind(ALL_LOCATIONS)
    .bind(bucket.as_str())
    .bind(first)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    let sparse = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(fill_series(&starts, &sparse))
}

pub(crate) async fn top_sellers(
    conn: &mut AnyConnection,
    window: Window,
    limit: i64,
    now: Timestamp,
) -> Result<Vec<TopSeller>, StoreError> {
    let now_us = now.timestamp_micros();
    let rows = sqlx::query(
        "SELECT sku, CAST(SUM(units_sold) AS BIGINT), COUNT(DISTINCT CASE WHEN kind = 'commit' THEN COALESCE(cause, id) END) \
         FROM analytics_events WHERE units_sold <> 0 AND at > $1 AND at <= $2 GROUP BY sku",
    )
    .bind(now_us - window.span().num_microseconds().unwrap_or(VELOCITY_WINDOW_DAYS * DAY_MICROS))
    .bind(now_us)
    .fetch_all(&mut *conn)
    .await?;
    let all = rows
        .iter()
        .map(|r| Ok(TopSeller { sku: r.try_get(0)?, units: r.try_get(1)?, orders: r.try_get(2)? }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(rank_top_sellers(all, limit))
}
