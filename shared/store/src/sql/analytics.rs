//! The analytics the aggregator keeps in the ledger's own database, and the figures read back from them.
//!
//! Recording keeps every event once (`analytics_events`, the raw table, which also makes delivery
//! exactly-once per event id), the latest levels per (sku, location), per-sku and per-location series in hour
//! and day buckets, and each sku's last health status. A status that changes leaves as a `stock.low`,
//! `stock.depleted` or `stock.replenished` event through the outbox, in the same transaction, so one crossing is
//! one event however often its cause is delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stockroom_domain::Timestamp;
use stockroom_domain::analytics::{
    Bucket, Health, HealthStatus, SalesPoint, Thresholds, TopSeller, VELOCITY_WINDOW_DAYS, Window, fill_series, health,
    is_order, rank_top_sellers, series_starts, units_sold,
};

use crate::analytics::{ObservedEvent, ObservedMovement, Recorded};
use crate::error::StoreError;
use crate::sql::{Conn, list, query, queues};
use crate::store::Ctx;

/// The series row of a sku across all its locations.
const ALL_LOCATIONS: &str = "*";
const DAY_MICROS: i64 = 86_400_000_000;
/// Ids per duplicate lookup: well under every backend's parameter limit.
const ID_LOOKUP_MAX: usize = 500;

/// Records events once each, in one transaction: the raw row, and for each new movement its levels and series;
/// then judges each touched sku's health and writes one threshold event per changed status to the outbox.
/// Each touched sku's status row is locked first (in sku order), so concurrent recorders of one sku take turns
/// and never both tell the same crossing.
pub(crate) async fn record(
    c: &mut dyn Conn,
    ctx: &Ctx,
    events: &[ObservedEvent],
    now: Timestamp,
) -> Result<Recorded, StoreError> {
    // Redeliveries are common (Pub/Sub is at-least-once): leave out events recorded before, before any status
    // row is locked. The insert below stays the arbiter for events that race in now. (The look-up is inside the
    // transaction: a plain read there locks nothing on SQLite and PostgreSQL, and on Spanner's emulator a strong
    // read outside one waits about a third of a second.)
    c.begin().await?;
    let known = recorded_before(c, events).await?;
    let fresh: Vec<&ObservedEvent> = events.iter().filter(|e| !known.contains(e.id.as_str())).collect();
    let mut done = Recorded { duplicates: events.len() - fresh.len(), ..Recorded::default() };
    if fresh.is_empty() {
        c.commit().await?;
        return Ok(done);
    }
    let skus: BTreeSet<&str> = fresh.iter().filter_map(|e| e.movement.as_ref()).map(|m| m.sku.as_str()).collect();
    let mut status = BTreeMap::new();
    for sku in &skus {
        c.execute(
            query(
                "INSERT INTO analytics_status (sku, location, status, changed_at) VALUES ($1, $2, 'ok', 0) \
                 ON CONFLICT (sku, location) DO NOTHING",
            )
            .bind(*sku)
            .bind(ALL_LOCATIONS),
        )
        .await?;
        let sql =
            format!("SELECT status FROM analytics_status WHERE sku = $1 AND location = $2{}", c.dialect().for_update());
        let row = c.fetch_one(query(sql).bind(*sku).bind(ALL_LOCATIONS)).await?;
        status.insert(*sku, HealthStatus::parse(&row.text(0)?).unwrap_or(HealthStatus::Ok));
    }

    // The newest new movement of each sku: the one a crossing is laid at.
    let mut crossed_by: HashMap<&str, &ObservedMovement> = HashMap::new();
    for e in fresh {
        if !insert_raw(c, e, now).await? {
            done.duplicates += 1;
            continue;
        }
        done.recorded += 1;
        if let Some(m) = &e.movement {
            apply_movement(c, m).await?;
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
        let thresholds = thresholds(c, sku).await?;
        let (available, sold_24h, sold_7d) = figures(c, sku, None, now).await?;
        let h = health(sku, available, sold_24h, sold_7d, thresholds, now);
        let before = status.get(sku).copied().unwrap_or(HealthStatus::Ok);
        if h.status == before {
            continue;
        }
        let id = ctx.ids.next_id();
        let event = crate::event::threshold_event(&id, &h, before, thresholds, Some(&movement.id), now);
        c.execute_all(vec![
            query("UPDATE analytics_status SET status = $1, changed_at = $2 WHERE sku = $3 AND location = $4")
                .bind(h.status.as_str())
                .bind(now)
                .bind(sku)
                .bind(ALL_LOCATIONS),
            queues::outbox_row(&id, sku, now, &event),
        ])
        .await?;
        done.crossings += 1;
    }
    c.commit().await?;
    Ok(done)
}

/// Ids of `events` recorded already.
async fn recorded_before(c: &mut dyn Conn, events: &[ObservedEvent]) -> Result<BTreeSet<String>, StoreError> {
    let mut known = BTreeSet::new();
    for chunk in events.chunks(ID_LOOKUP_MAX) {
        let sql = format!("SELECT id FROM analytics_events WHERE id IN ({})", list(1, chunk.len()));
        for row in c.fetch_all(query(sql).bind_all(chunk.iter().map(|e| e.id.as_str()))).await? {
            known.insert(row.text(0)?);
        }
    }
    Ok(known)
}

/// The raw row; `false` when the event was recorded before.
async fn insert_raw(c: &mut dyn Conn, e: &ObservedEvent, now: Timestamp) -> Result<bool, StoreError> {
    let m = e.movement.as_ref();
    let inserted = c
        .execute(
            query(
                "INSERT INTO analytics_events (id, type, received_at, at, sku, location, kind, on_hand_delta, reserved_delta, \
                 committed_delta, units_sold, cause, available, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&e.id)
            .bind(&e.ty)
            .bind(now)
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
            .bind(e.body.to_string()),
        )
        .await?;
    Ok(inserted == 1)
}

/// The row's levels become `m`'s when `m` is newer than the movement they come from, by (time, id): late and
/// repeated events never roll them back.
async fn upsert_levels(c: &mut dyn Conn, m: &ObservedMovement) -> Result<(), StoreError> {
    let at = m.at.timestamp_micros();
    // The row as `m` leaves it, in the column order of every statement below.
    let row = |sql: &'static str| {
        query(sql)
            .bind(&m.sku)
            .bind(&m.location)
            .bind(m.on_hand)
            .bind(m.reserved)
            .bind(m.committed)
            .bind(m.safety_stock)
            .bind(m.available)
            .bind(at)
            .bind(&m.id)
    };
    if c.dialect().has_conditional_upsert() {
        c.execute(row(
            "INSERT INTO analytics_levels (sku, location, on_hand, reserved, committed, safety_stock, available, \
             movement_at, movement_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (sku, location) DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved, \
             committed = excluded.committed, safety_stock = excluded.safety_stock, available = excluded.available, \
             movement_at = excluded.movement_at, movement_id = excluded.movement_id \
             WHERE analytics_levels.movement_at < excluded.movement_at \
                OR (analytics_levels.movement_at = excluded.movement_at AND analytics_levels.movement_id < excluded.movement_id)",
        ))
        .await?;
        return Ok(());
    }
    // Read, decide, write: the sku's status row, locked by `record`, keeps other recorders of the sku out.
    let current = c
        .fetch_optional(
            query("SELECT movement_at, movement_id FROM analytics_levels WHERE sku = $1 AND location = $2")
                .bind(&m.sku)
                .bind(&m.location),
        )
        .await?;
    let sql = match current {
        Some(row) if (row.int(0)?, row.text(1)?) >= (at, m.id.clone()) => return Ok(()),
        Some(_) => {
            "UPDATE analytics_levels SET on_hand = $3, reserved = $4, committed = $5, safety_stock = $6, available = $7, \
             movement_at = $8, movement_id = $9 WHERE sku = $1 AND location = $2"
        }
        None => {
            "INSERT INTO analytics_levels (sku, location, on_hand, reserved, committed, safety_stock, available, \
             movement_at, movement_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        }
    };
    c.execute(row(sql)).await?;
    Ok(())
}

/// One bucket of a series gains `units` and `orders`; its figures become these when `last_at` is at least as
/// new as the bucket's.
struct SeriesPoint<'a> {
    sku: &'a str,
    location: &'a str,
    bucket: Bucket,
    start: i64,
    units: i64,
    orders: i64,
    on_hand: i64,
    available: i64,
    last_at: i64,
}

async fn add_to_series(c: &mut dyn Conn, p: SeriesPoint<'_>) -> Result<(), StoreError> {
    if c.dialect().has_conditional_upsert() {
        c.execute(
            query(
                "INSERT INTO analytics_series (sku, location, bucket, start, units_sold, orders, on_hand, available, \
                 last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (sku, location, bucket, start) DO UPDATE SET \
                 units_sold = analytics_series.units_sold + excluded.units_sold, \
                 orders = analytics_series.orders + excluded.orders, \
                 on_hand = CASE WHEN excluded.last_at >= analytics_series.last_at THEN excluded.on_hand ELSE analytics_series.on_hand END, \
                 available = CASE WHEN excluded.last_at >= analytics_series.last_at THEN excluded.available ELSE analytics_series.available END, \
                 last_at = CASE WHEN excluded.last_at >= analytics_series.last_at THEN excluded.last_at ELSE analytics_series.last_at END",
            )
            .bind(p.sku)
            .bind(p.location)
            .bind(p.bucket.as_str())
            .bind(p.start)
            .bind(p.units)
            .bind(p.orders)
            .bind(p.on_hand)
            .bind(p.available)
            .bind(p.last_at),
        )
        .await?;
        return Ok(());
    }
    // Read, decide, write, under the sku's status lock (see `upsert_levels`).
    let current = c
        .fetch_optional(
            query(
                "SELECT units_sold, orders, on_hand, available, last_at FROM analytics_series \
                 WHERE sku = $1 AND location = $2 AND bucket = $3 AND start = $4",
            )
            .bind(p.sku)
            .bind(p.location)
            .bind(p.bucket.as_str())
            .bind(p.start),
        )
        .await?;
    let (sql, units, orders, on_hand, available, last_at) = match current {
        None => (
            "INSERT INTO analytics_series (sku, location, bucket, start, units_sold, orders, on_hand, available, last_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            p.units,
            p.orders,
            p.on_hand,
            p.available,
            p.last_at,
        ),
        Some(row) => {
            let newer = p.last_at >= row.int(4)?;
            (
                "UPDATE analytics_series SET units_sold = $5, orders = $6, on_hand = $7, available = $8, last_at = $9 \
                 WHERE sku = $1 AND location = $2 AND bucket = $3 AND start = $4",
                row.int(0)? + p.units,
                row.int(1)? + p.orders,
                if newer { p.on_hand } else { row.int(2)? },
                if newer { p.available } else { row.int(3)? },
                if newer { p.last_at } else { row.int(4)? },
            )
        }
    };
    c.execute(
        query(sql)
            .bind(p.sku)
            .bind(p.location)
            .bind(p.bucket.as_str())
            .bind(p.start)
            .bind(units)
            .bind(orders)
            .bind(on_hand)
            .bind(available)
            .bind(last_at),
    )
    .await?;
    Ok(())
}

/// A new movement's levels (when it is the newest of its row) and its four series rows.
async fn apply_movement(c: &mut dyn Conn, m: &ObservedMovement) -> Result<(), StoreError> {
    let at = m.at.timestamp_micros();
    upsert_levels(c, m).await?;
    let totals = c
        .fetch_one(
            query(
                "SELECT CAST(COALESCE(SUM(on_hand), 0) AS BIGINT), CAST(COALESCE(SUM(available), 0) AS BIGINT) \
                 FROM analytics_levels WHERE sku = $1",
            )
            .bind(&m.sku),
        )
        .await?;
    let (total_on_hand, total_available) = (totals.int(0)?, totals.int(1)?);
    let sold = units_sold(&m.kind, m.committed_delta);
    let order = i64::from(is_order(&m.kind));
    for bucket in [Bucket::Hour, Bucket::Day] {
        let start = bucket.start_of(at);
        // An order split across locations is one order of the sku: count it in the total row once.
        let first_of_order = match (&m.cause, order) {
            (Some(cause), 1) => {
                let earlier = c
                    .fetch_one(
                        query(
                            "SELECT COUNT(*) FROM analytics_events WHERE sku = $1 AND cause = $2 AND kind = 'commit' \
                             AND at >= $3 AND at < $4 AND id <> $5",
                        )
                        .bind(&m.sku)
                        .bind(cause)
                        .bind(start)
                        .bind(start + bucket.micros())
                        .bind(&m.id),
                    )
                    .await?;
                i64::from(earlier.int(0)? == 0)
            }
            _ => order,
        };
        for (location, orders, on_hand, available) in [
            (m.location.as_str(), order, m.on_hand, m.available),
            (ALL_LOCATIONS, first_of_order, total_on_hand, total_available),
        ] {
            let point = SeriesPoint {
                sku: &m.sku,
                location,
                bucket,
                start,
                units: sold,
                orders,
                on_hand,
                available,
                last_at: at,
            };
            add_to_series(c, point).await?;
        }
    }
    Ok(())
}

async fn thresholds(c: &mut dyn Conn, sku: &str) -> Result<Thresholds, StoreError> {
    let row = c
        .fetch_optional(query("SELECT low_stock_days, reorder_point FROM sku_policies WHERE sku = $1").bind(sku))
        .await?;
    Ok(match row {
        Some(r) => Thresholds::from_policy(r.opt_int(0)?, r.opt_int(1)?),
        None => Thresholds::default(),
    })
}

/// `(available, sold in the trailing 24 h, sold in the trailing 7 days)` of one sku, at one location or across
/// all of them.
async fn figures(
    c: &mut dyn Conn,
    sku: &str,
    location: Option<&str>,
    now: Timestamp,
) -> Result<(i64, i64, i64), StoreError> {
    let mut q = query(format!(
        "SELECT CAST(COALESCE(SUM(available), 0) AS BIGINT) FROM analytics_levels WHERE sku = $1{}",
        if location.is_some() { " AND location = $2" } else { "" }
    ))
    .bind(sku);
    if let Some(location) = location {
        q = q.bind(location);
    }
    let available = c.fetch_one(q).await?.int(0)?;
    let sales = sold_by_sku(c, Some(sku), location, now).await?;
    let (day, week) = sales.get(sku).copied().unwrap_or_default();
    Ok((available, day, week))
}

/// Units sold per sku in the trailing 24 hours and 7 days, for one sku or all, at one location or all.
async fn sold_by_sku(
    c: &mut dyn Conn,
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
    let mut q = query(sql).bind(now_us - DAY_MICROS).bind(now_us - VELOCITY_WINDOW_DAYS * DAY_MICROS).bind(now_us);
    if let Some(sku) = sku {
        q = q.bind(sku);
    }
    if let Some(location) = location {
        q = q.bind(location);
    }
    let mut out = HashMap::new();
    for row in c.fetch_all(q).await? {
        out.insert(row.text(0)?, (row.int(1)?, row.int(2)?));
    }
    Ok(out)
}

pub(crate) async fn stock_health(
    c: &mut dyn Conn,
    location: Option<&str>,
    now: Timestamp,
) -> Result<Vec<Health>, StoreError> {
    let mut q = query(format!(
        "SELECT sku, CAST(COALESCE(SUM(available), 0) AS BIGINT) FROM analytics_levels{} GROUP BY sku ORDER BY sku",
        if location.is_some() { " WHERE location = $1" } else { "" }
    ));
    if let Some(location) = location {
        q = q.bind(location);
    }
    let available = c.fetch_all(q).await?;
    let sold = sold_by_sku(c, None, location, now).await?;
    let mut policies = HashMap::new();
    for row in c.fetch_all(query("SELECT sku, low_stock_days, reorder_point FROM sku_policies")).await? {
        policies.insert(row.text(0)?, Thresholds::from_policy(row.opt_int(1)?, row.opt_int(2)?));
    }
    available
        .into_iter()
        .map(|row| {
            let sku = row.text(0)?;
            let (day, week) = sold.get(&sku).copied().unwrap_or_default();
            let t = policies.get(&sku).copied().unwrap_or_default();
            Ok(health(&sku, row.int(1)?, day, week, t, now))
        })
        .collect()
}

pub(crate) async fn sales(
    c: &mut dyn Conn,
    sku: &str,
    bucket: Bucket,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<SalesPoint>, StoreError> {
    let Some(starts) = series_starts(bucket, from, to) else {
        return Ok(Vec::new());
    };
    let (first, last) = (starts.first().copied().unwrap_or_default(), starts.last().copied().unwrap_or_default());
    let rows = c
        .fetch_all(
            query(
                "SELECT start, units_sold, orders FROM analytics_series \
                 WHERE sku = $1 AND location = $2 AND bucket = $3 AND start >= $4 AND start <= $5",
            )
            .bind(sku)
            .bind(ALL_LOCATIONS)
            .bind(bucket.as_str())
            .bind(first)
            .bind(last),
        )
        .await?;
    let sparse = rows.iter().map(|r| Ok((r.int(0)?, r.int(1)?, r.int(2)?))).collect::<Result<Vec<_>, StoreError>>()?;
    Ok(fill_series(&starts, &sparse))
}

pub(crate) async fn top_sellers(
    c: &mut dyn Conn,
    window: Window,
    limit: i64,
    now: Timestamp,
) -> Result<Vec<TopSeller>, StoreError> {
    let now_us = now.timestamp_micros();
    let rows = c
        .fetch_all(
            query(
                "SELECT sku, CAST(SUM(units_sold) AS BIGINT), COUNT(DISTINCT CASE WHEN kind = 'commit' THEN COALESCE(cause, id) END) \
                 FROM analytics_events WHERE units_sold <> 0 AND at > $1 AND at <= $2 GROUP BY sku",
            )
            .bind(now_us - window.span().num_microseconds().unwrap_or(VELOCITY_WINDOW_DAYS * DAY_MICROS))
            .bind(now_us),
        )
        .await?;
    let all = rows
        .iter()
        .map(|r| Ok(TopSeller { sku: r.text(0)?, units: r.int(1)?, orders: r.int(2)? }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(rank_top_sellers(all, limit))
}
