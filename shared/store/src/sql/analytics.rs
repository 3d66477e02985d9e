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
use crate::sql::{Conn, Query, list, query, queues};
use crate::store::Ctx;

/// The series row of a sku across all its locations.
const ALL_LOCATIONS: &str = "*";
const DAY_MICROS: i64 = 86_400_000_000;
/// Ids per duplicate lookup: well under every backend's parameter limit.
const ID_LOOKUP_MAX: usize = 500;
/// Values per list where a statement has two lists (skus and causes).
const PAIRED_LOOKUP_MAX: usize = 400;
/// Values per list in a series look-up, which has three.
const SERIES_LOOKUP_MAX: usize = 300;
/// Skus per trailing-sales look-up, which lists them four times.
const SOLD_LOOKUP_MAX: usize = 200;

/// Records events once each, in one transaction: the raw row, and for each new movement its levels and series;
/// then judges each touched sku's health and writes one threshold event per changed status to the outbox.
/// Each touched sku's status row is locked first (in sku order), so concurrent recorders of one sku take turns
/// and never both tell the same crossing; under those locks the batch's level and series rows are read once,
/// brought up to date in memory movement by movement, and each written once. A batch costs the same few round
/// trips however many events it holds: on Spanner, where every statement is one, and on its emulator, which
/// lets one read-write transaction run at a time, that is what keeps recording from crowding out checkouts.
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
    let movements: Vec<&ObservedMovement> = fresh.iter().filter_map(|e| e.movement.as_ref()).collect();
    let skus: BTreeSet<&str> = movements.iter().map(|m| m.sku.as_str()).collect();
    let status = lock_status(c, &skus).await?;
    let mut orders = earlier_orders(c, &movements).await?;
    let inserted = insert_raw(c, &fresh, now).await?;
    let mut book = Book::read(c, &skus, &movements).await?;

    // The newest new movement of each sku: the one a crossing is laid at.
    let mut crossed_by: BTreeMap<&str, &ObservedMovement> = BTreeMap::new();
    for (e, new) in fresh.iter().zip(inserted) {
        if !new {
            done.duplicates += 1;
            continue;
        }
        done.recorded += 1;
        if let Some(m) = &e.movement {
            book.apply(m, &mut orders);
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
    c.execute_all(book.writes()).await?;

    let crossed: Vec<&str> = crossed_by.keys().copied().collect();
    let thresholds = thresholds_of(c, &crossed).await?;
    let sold = sold_recently(c, &crossed, now).await?;
    let mut writes = Vec::new();
    for (sku, movement) in crossed_by {
        let t = thresholds.get(sku).copied().unwrap_or_default();
        let (sold_24h, sold_7d) = sold.get(sku).copied().unwrap_or_default();
        let h = health(sku, book.available(sku), sold_24h, sold_7d, t, now);
        let before = status.get(sku).copied().unwrap_or(HealthStatus::Ok);
        if h.status == before {
            continue;
        }
        let id = ctx.ids.next_id();
        let event = crate::event::threshold_event(&id, &h, before, t, Some(&movement.id), now);
        writes.push(
            query("UPDATE analytics_status SET status = $1, changed_at = $2 WHERE sku = $3 AND location = $4")
                .bind(h.status.as_str())
                .bind(now)
                .bind(sku)
                .bind(ALL_LOCATIONS),
        );
        writes.push(queues::outbox_row(&id, sku, now, &event));
        done.crossings += 1;
    }
    c.execute_all(writes).await?;
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

/// Each sku's status row, made if missing and locked, in sku order (PostgreSQL locks the rows of an
/// `ORDER BY … FOR UPDATE` in that order; SQLite has one writer; Spanner's reads in a read-write transaction
/// lock what they read).
async fn lock_status(c: &mut dyn Conn, skus: &BTreeSet<&str>) -> Result<BTreeMap<String, HealthStatus>, StoreError> {
    let made = skus.iter().map(|sku| {
        query(
            "INSERT INTO analytics_status (sku, location, status, changed_at) VALUES ($1, $2, 'ok', 0) \
             ON CONFLICT (sku, location) DO NOTHING",
        )
        .bind(*sku)
        .bind(ALL_LOCATIONS)
    });
    c.execute_all(made.collect()).await?;
    let mut status = BTreeMap::new();
    let skus: Vec<&str> = skus.iter().copied().collect();
    for chunk in skus.chunks(ID_LOOKUP_MAX) {
        let sql = format!(
            "SELECT sku, status FROM analytics_status WHERE location = $1 AND sku IN ({}) ORDER BY sku{}",
            list(2, chunk.len()),
            c.dialect().for_update()
        );
        for row in c.fetch_all(query(sql).bind(ALL_LOCATIONS).bind_all(chunk.iter().copied())).await? {
            status.insert(row.text(0)?, HealthStatus::parse(&row.text(1)?).unwrap_or(HealthStatus::Ok));
        }
    }
    Ok(status)
}

/// A commit recorded before: `(sku, cause, at, id)`. An order split across locations is one order of the sku,
/// counted in the sku's total row by its first commit in a bucket.
type OrderCommit = (String, String, i64, String);

/// The commits already recorded that share a sku and a cause with the batch's orders, around their days.
async fn earlier_orders(c: &mut dyn Conn, movements: &[&ObservedMovement]) -> Result<Vec<OrderCommit>, StoreError> {
    let orders: Vec<&ObservedMovement> =
        movements.iter().copied().filter(|m| is_order(&m.kind) && m.cause.is_some()).collect();
    let day = |m: &&ObservedMovement| Bucket::Day.start_of(m.at.timestamp_micros());
    let (Some(from), Some(last)) = (orders.iter().map(day).min(), orders.iter().map(day).max()) else {
        return Ok(Vec::new());
    };
    let skus: Vec<&str> = orders.iter().map(|m| m.sku.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let causes: Vec<&str> =
        orders.iter().filter_map(|m| m.cause.as_deref()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut found = Vec::new();
    for skus in skus.chunks(PAIRED_LOOKUP_MAX) {
        for causes in causes.chunks(PAIRED_LOOKUP_MAX) {
            let sql = format!(
                "SELECT sku, cause, at, id FROM analytics_events WHERE kind = 'commit' AND at >= $1 AND at < $2 \
                 AND sku IN ({}) AND cause IN ({})",
                list(3, skus.len()),
                list(3 + skus.len(), causes.len())
            );
            let q = query(sql)
                .bind(from)
                .bind(last + Bucket::Day.micros())
                .bind_all(skus.iter().copied())
                .bind_all(causes.iter().copied());
            for row in c.fetch_all(q).await? {
                found.push((row.text(0)?, row.text(1)?, row.int(2)?, row.text(3)?));
            }
        }
    }
    Ok(found)
}

/// The raw rows, in one round trip; `false` for an event recorded before.
async fn insert_raw(c: &mut dyn Conn, events: &[&ObservedEvent], now: Timestamp) -> Result<Vec<bool>, StoreError> {
    let inserts = events.iter().map(|e| {
        let m = e.movement.as_ref();
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
        .bind(e.body.to_string())
    });
    Ok(c.execute_all(inserts.collect()).await?.into_iter().map(|n| n == 1).collect())
}

/// A sku's levels at one location, from its newest movement.
struct LevelRow {
    on_hand: i64,
    reserved: i64,
    committed: i64,
    safety_stock: i64,
    available: i64,
    movement_at: i64,
    movement_id: String,
    stored: bool,
    changed: bool,
}

/// One bucket of a series: `(sku, location, bucket, start)`.
type SeriesKey = (String, String, &'static str, i64);

struct SeriesRow {
    units_sold: i64,
    orders: i64,
    on_hand: i64,
    available: i64,
    last_at: i64,
    stored: bool,
    changed: bool,
}

/// The level and series rows a batch touches, read once and written once.
struct Book {
    levels: BTreeMap<(String, String), LevelRow>,
    series: BTreeMap<SeriesKey, SeriesRow>,
}

impl Book {
    /// Every level row of the batch's skus (a sku's total is the sum over its locations), and the series rows
    /// its movements fall in.
    async fn read(
        c: &mut dyn Conn,
        skus: &BTreeSet<&str>,
        movements: &[&ObservedMovement],
    ) -> Result<Self, StoreError> {
        let skus: Vec<&str> = skus.iter().copied().collect();
        let mut levels = BTreeMap::new();
        for chunk in skus.chunks(ID_LOOKUP_MAX) {
            let sql = format!(
                "SELECT sku, location, on_hand, reserved, committed, safety_stock, available, movement_at, movement_id \
                 FROM analytics_levels WHERE sku IN ({})",
                list(1, chunk.len())
            );
            for r in c.fetch_all(query(sql).bind_all(chunk.iter().copied())).await? {
                let row = LevelRow {
                    on_hand: r.int(2)?,
                    reserved: r.int(3)?,
                    committed: r.int(4)?,
                    safety_stock: r.int(5)?,
                    available: r.int(6)?,
                    movement_at: r.int(7)?,
                    movement_id: r.text(8)?,
                    stored: true,
                    changed: false,
                };
                levels.insert((r.text(0)?, r.text(1)?), row);
            }
        }

        let mut wanted = BTreeSet::new();
        for m in movements {
            for bucket in [Bucket::Hour, Bucket::Day] {
                let start = bucket.start_of(m.at.timestamp_micros());
                for location in [m.location.as_str(), ALL_LOCATIONS] {
                    wanted.insert((m.sku.clone(), location.to_owned(), bucket.as_str(), start));
                }
            }
        }
        // Each column of the key constrained, so that every backend looks the rows up on the key's index.
        let locations: Vec<&str> = wanted.iter().map(|k| k.1.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        let starts: Vec<i64> = wanted.iter().map(|k| k.3).collect::<BTreeSet<_>>().into_iter().collect();
        let buckets = [Bucket::Hour.as_str(), Bucket::Day.as_str()];
        let mut series = BTreeMap::new();
        let mut lookups = Vec::new();
        for skus in skus.chunks(SERIES_LOOKUP_MAX) {
            for locations in locations.chunks(SERIES_LOOKUP_MAX) {
                for starts in starts.chunks(SERIES_LOOKUP_MAX) {
                    let sql = format!(
                        "SELECT sku, location, bucket, start, units_sold, orders, on_hand, available, last_at \
                         FROM analytics_series WHERE sku IN ({}) AND location IN ({}) AND bucket IN ($1, $2) \
                         AND start IN ({})",
                        list(3, skus.len()),
                        list(3 + skus.len(), locations.len()),
                        list(3 + skus.len() + locations.len(), starts.len())
                    );
                    lookups.push(
                        query(sql)
                            .bind_all(buckets)
                            .bind_all(skus.iter().copied())
                            .bind_all(locations.iter().copied())
                            .bind_all(starts.iter().copied()),
                    );
                }
            }
        }
        for q in lookups {
            for r in c.fetch_all(q).await? {
                let bucket = if r.text(2)? == Bucket::Day.as_str() { Bucket::Day } else { Bucket::Hour };
                let key = (r.text(0)?, r.text(1)?, bucket.as_str(), r.int(3)?);
                if !wanted.contains(&key) {
                    continue;
                }
                let row = SeriesRow {
                    units_sold: r.int(4)?,
                    orders: r.int(5)?,
                    on_hand: r.int(6)?,
                    available: r.int(7)?,
                    last_at: r.int(8)?,
                    stored: true,
                    changed: false,
                };
                series.insert(key, row);
            }
        }
        Ok(Self { levels, series })
    }

    /// A sku's `(on_hand, available)` summed over its locations.
    fn totals(&self, sku: &str) -> (i64, i64) {
        self.levels
            .range((sku.to_owned(), String::new())..)
            .take_while(|((s, _), _)| s == sku)
            .fold((0, 0), |(on_hand, available), (_, l)| (on_hand + l.on_hand, available + l.available))
    }

    fn available(&self, sku: &str) -> i64 {
        self.totals(sku).1
    }

    /// A new movement: its row's levels become its own when it is the newest of the row, by (time, id), so
    /// late and repeated events never roll them back; and it adds to its four series rows.
    fn apply(&mut self, m: &ObservedMovement, orders: &mut Vec<OrderCommit>) {
        let at = m.at.timestamp_micros();
        let key = (m.sku.clone(), m.location.clone());
        let newer = self.levels.get(&key).is_none_or(|l| (l.movement_at, l.movement_id.as_str()) < (at, m.id.as_str()));
        if newer {
            let stored = self.levels.get(&key).is_some_and(|l| l.stored);
            let row = LevelRow {
                on_hand: m.on_hand,
                reserved: m.reserved,
                committed: m.committed,
                safety_stock: m.safety_stock,
                available: m.available,
                movement_at: at,
                movement_id: m.id.clone(),
                stored,
                changed: true,
            };
            self.levels.insert(key, row);
        }
        let (total_on_hand, total_available) = self.totals(&m.sku);
        let sold = units_sold(&m.kind, m.committed_delta);
        let order = i64::from(is_order(&m.kind));
        for bucket in [Bucket::Hour, Bucket::Day] {
            let start = bucket.start_of(at);
            let first_of_order = match (&m.cause, order) {
                (Some(cause), 1) => {
                    let end = start + bucket.micros();
                    let earlier = orders
                        .iter()
                        .any(|(s, c, t, id)| *s == m.sku && c == cause && (start..end).contains(t) && *id != m.id);
                    i64::from(!earlier)
                }
                _ => order,
            };
            for (location, orders, on_hand, available) in [
                (m.location.as_str(), order, m.on_hand, m.available),
                (ALL_LOCATIONS, first_of_order, total_on_hand, total_available),
            ] {
                let key = (m.sku.clone(), location.to_owned(), bucket.as_str(), start);
                let row = self.series.entry(key).or_insert(SeriesRow {
                    units_sold: 0,
                    orders: 0,
                    on_hand,
                    available,
                    last_at: i64::MIN,
                    stored: false,
                    changed: false,
                });
                row.units_sold += sold;
                row.orders += orders;
                if at >= row.last_at {
                    (row.on_hand, row.available, row.last_at) = (on_hand, available, at);
                }
                row.changed = true;
            }
        }
        if let (Some(cause), 1) = (&m.cause, order) {
            orders.push((m.sku.clone(), cause.clone(), at, m.id.clone()));
        }
    }

    /// One statement per changed row: an insert for a row that was not there, else an update.
    fn writes(&self) -> Vec<Query> {
        let levels = self.levels.iter().filter(|(_, l)| l.changed).map(|((sku, location), l)| {
            let sql = if l.stored {
                "UPDATE analytics_levels SET on_hand = $3, reserved = $4, committed = $5, safety_stock = $6, \
                 available = $7, movement_at = $8, movement_id = $9 WHERE sku = $1 AND location = $2"
            } else {
                "INSERT INTO analytics_levels (sku, location, on_hand, reserved, committed, safety_stock, available, \
                 movement_at, movement_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            };
            query(sql)
                .bind(sku.as_str())
                .bind(location.as_str())
                .bind(l.on_hand)
                .bind(l.reserved)
                .bind(l.committed)
                .bind(l.safety_stock)
                .bind(l.available)
                .bind(l.movement_at)
                .bind(l.movement_id.as_str())
        });
        let series = self.series.iter().filter(|(_, s)| s.changed).map(|((sku, location, bucket, start), s)| {
            let sql = if s.stored {
                "UPDATE analytics_series SET units_sold = $5, orders = $6, on_hand = $7, available = $8, last_at = $9 \
                 WHERE sku = $1 AND location = $2 AND bucket = $3 AND start = $4"
            } else {
                "INSERT INTO analytics_series (sku, location, bucket, start, units_sold, orders, on_hand, available, \
                 last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            };
            query(sql)
                .bind(sku.as_str())
                .bind(location.as_str())
                .bind(*bucket)
                .bind(*start)
                .bind(s.units_sold)
                .bind(s.orders)
                .bind(s.on_hand)
                .bind(s.available)
                .bind(s.last_at)
        });
        levels.chain(series).collect()
    }
}

/// The thresholds of `skus` (the defaults for one without a policy).
async fn thresholds_of(c: &mut dyn Conn, skus: &[&str]) -> Result<HashMap<String, Thresholds>, StoreError> {
    let mut out = HashMap::new();
    for chunk in skus.chunks(ID_LOOKUP_MAX) {
        let sql = format!(
            "SELECT sku, low_stock_days, reorder_point FROM sku_policies WHERE sku IN ({})",
            list(1, chunk.len())
        );
        for r in c.fetch_all(query(sql).bind_all(chunk.iter().copied())).await? {
            out.insert(r.text(0)?, Thresholds::from_policy(r.opt_int(1)?, r.opt_int(2)?));
        }
    }
    Ok(out)
}

/// Units sold by each of `skus` (across locations) in the trailing 24 hours and 7 days, as [`sold_by_sku`]
/// gives them, read off the hourly series: the recorder asks this for every sku each batch touches, and summing
/// a busy sku's week of raw events there grew with every sale (the soak's p99 and throughput sank as
/// `analytics_events` grew). Whole hours come from at most 168 series rows per sku; the part-hour at each
/// window's far edge, and the current hour up to `now`, from the raw events, in ranges of an hour at most on the
/// `(sku, at, units_sold)` index. The sums equal the raw events' exactly. One statement per 200 skus: on Spanner
/// a statement is a round trip.
async fn sold_recently(
    c: &mut dyn Conn,
    skus: &[&str],
    now: Timestamp,
) -> Result<HashMap<String, (i64, i64)>, StoreError> {
    let now_us = now.timestamp_micros();
    let hour = Bucket::Hour.micros();
    let (day_edge, week_edge) = (now_us - DAY_MICROS, now_us - VELOCITY_WINDOW_DAYS * DAY_MICROS);
    // The first whole hour after each (exclusive) edge, and the hour holding `now`.
    let (day_first, week_first) = (Bucket::Hour.start_of(day_edge) + hour, Bucket::Hour.start_of(week_edge) + hour);
    let current = Bucket::Hour.start_of(now_us);
    let mut out: HashMap<String, (i64, i64)> = HashMap::new();
    for chunk in skus.chunks(SOLD_LOOKUP_MAX) {
        let n = chunk.len();
        let skus_at = |first: usize| list(first, n);
        // PostgreSQL sums BIGINTs as NUMERIC: cast back. Each part: (sku, in the last 24 h, in the last 7 days).
        let sql = format!(
            "SELECT sku, CAST(SUM(CASE WHEN start >= $1 THEN units_sold ELSE 0 END) AS BIGINT), \
             CAST(SUM(units_sold) AS BIGINT) FROM analytics_series \
             WHERE bucket = $2 AND location = $3 AND start >= $4 AND start < $5 AND sku IN ({}) GROUP BY sku \
             UNION ALL SELECT sku, CAST(SUM(units_sold) AS BIGINT), CAST(0 AS BIGINT) FROM analytics_events \
             WHERE units_sold <> 0 AND at > $6 AND at < $1 AND sku IN ({}) GROUP BY sku \
             UNION ALL SELECT sku, CAST(0 AS BIGINT), CAST(SUM(units_sold) AS BIGINT) FROM analytics_events \
             WHERE units_sold <> 0 AND at > $7 AND at < $4 AND sku IN ({}) GROUP BY sku \
             UNION ALL SELECT sku, CAST(SUM(units_sold) AS BIGINT), CAST(SUM(units_sold) AS BIGINT) FROM analytics_events \
             WHERE units_sold <> 0 AND at >= $5 AND at <= $8 AND sku IN ({}) GROUP BY sku",
            skus_at(9),
            skus_at(9 + n),
            skus_at(9 + 2 * n),
            skus_at(9 + 3 * n)
        );
        let q = query(sql)
            .bind(day_first)
            .bind(Bucket::Hour.as_str())
            .bind(ALL_LOCATIONS)
            .bind(week_first)
            .bind(current)
            .bind(day_edge)
            .bind(week_edge)
            .bind(now_us)
            .bind_all((0..4).flat_map(|_| chunk.iter().copied()));
        for row in c.fetch_all(q).await? {
            let sums = out.entry(row.text(0)?).or_default();
            sums.0 += row.int(1)?;
            sums.1 += row.int(2)?;
        }
    }
    out.retain(|_, sums| *sums != (0, 0));
    Ok(out)
}

/// Units sold per sku in the trailing 24 hours and 7 days, at one location or all, summed from the raw events
/// (the dashboard's read; the recorder reads [`sold_recently`]).
async fn sold_by_sku(
    c: &mut dyn Conn,
    location: Option<&str>,
    now: Timestamp,
) -> Result<HashMap<String, (i64, i64)>, StoreError> {
    let now_us = now.timestamp_micros();
    // PostgreSQL sums BIGINTs as NUMERIC: cast back.
    let mut sql = "SELECT sku, CAST(COALESCE(SUM(CASE WHEN at > $1 THEN units_sold ELSE 0 END), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(units_sold), 0) AS BIGINT) FROM analytics_events \
                   WHERE units_sold <> 0 AND at > $2 AND at <= $3"
        .to_owned();
    if location.is_some() {
        sql.push_str(" AND location = $4");
    }
    sql.push_str(" GROUP BY sku");
    let mut q = query(sql).bind(now_us - DAY_MICROS).bind(now_us - VELOCITY_WINDOW_DAYS * DAY_MICROS).bind(now_us);
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
    let sold = sold_by_sku(c, location, now).await?;
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
