//! [`SqlStore`]: the store over SQLite (embedded, default) or PostgreSQL, chosen by the URL.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, Executor, Row};
use stockroom_domain::{Levels, Location, MovementKind, ReservationId, Sku, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::analytics::{self, AnalyticsReader, ObservedEvent, Recorded};
use crate::answer::Answer;
use crate::error::{StoreError, is_retryable_conflict};
use crate::model::{
    Command, CountsFile, Delivery, Idempotency, LocationRecord, MovementFilter, MovementPage, MovementRow, OutboxEvent,
    Policy, PolicyUpdate, QueuedCommand, ReservationView, Settled, StockView,
};
use crate::runner::{self, Claim};
use crate::{Store, queues, schema};
use stockroom_domain::analytics::{Bucket, Health, SalesPoint, TopSeller, Window};

/// Where the two databases part ways. Everything else is the same SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row locks. SQLite has one writer, so a transaction already excludes every other.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }
}

/// `$start, $start+1, …` for `n` parameters.
pub(crate) fn list(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn parse<T, E: std::fmt::Display>(f: impl Fn(&str) -> Result<T, E>, raw: String) -> Result<T, StoreError> {
    f(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The store's clock, at the precision it stores (microseconds), so that a first answer and a later read of the
/// same reservation show the same instants.
pub fn now() -> Timestamp {
    let us = chrono::Utc::now().timestamp_micros();
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_else(chrono::Utc::now)
}

pub(crate) fn from_micros(us: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt(format!("timestamp {us}")))
}

/// Tuning, each with its unit. Defaults suit one small machine.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH` or `postgres://…`.
    pub url: String,
    /// PostgreSQL connections, or SQLite reader connections.
    pub pool_max: u32,
    /// How long a request waits for a connection before the store answers "unavailable".
    pub acquire_timeout_ms: u64,
    /// SQLite: commands applied in one transaction at most.
    pub batch_max: usize,
    /// SQLite: commands waiting for the writer at most; beyond that the store answers "unavailable".
    pub queue_max: usize,
    /// PostgreSQL: how many times a command that hit a deadlock or serialization failure is run again.
    pub conflict_retries_max: u32,
    /// How long an idempotency key stays "in progress" for an attempt that crashed before answering; after
    /// that a retry takes it over.
    pub claim_lease_seconds: i64,
}

impl StoreSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_max: 16,
            acquire_timeout_ms: 5_000,
            batch_max: 128,
            queue_max: 4_096,
            conflict_retries_max: 3,
            claim_lease_seconds: 10,
        }
    }
}

/// The ledger over SQL. Cheap to clone.
#[derive(Clone)]
pub struct SqlStore {
    dialect: Dialect,
    /// PostgreSQL: every connection. SQLite: readers only; writes go through `writer`.
    pool: AnyPool,
    writer: Option<mpsc::Sender<Job>>,
    conflict_retries_max: u32,
    claim_lease_seconds: i64,
}

/// Writes the SQLite writer task performs.
enum Work {
    Claim(Idempotency, String, i64),
    Unclaim(String, String),
    Finish(String, String, Answer),
    Execute(Command, Option<(String, String)>, Option<Delivery>),
    Enqueue(Vec<QueuedCommand>),
    Settle(String, Settled),
    MarkPublished(Vec<String>),
    RecordCountsFile(CountsFile),
    PutShopifyItem(String, Sku),
    PutShopifyLocation(String, Location),
    PutLocation(Location, String, i64),
    PutPolicy(Sku, PolicyUpdate),
    Record(Vec<ObservedEvent>, Timestamp),
}

enum Done {
    Claim(Claim),
    Flag(bool),
    Unit,
    Answer(Answer),
    Location(LocationRecord, bool),
    Policy(Policy),
    Recorded(Recorded),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

impl SqlStore {
    /// Connects, creates the schema if needed, and (SQLite) starts the writer.
    pub async fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if settings.url.starts_with("sqlite:") {
            (Dialect::Sqlite, sqlite_url(&settings.url))
        } else if settings.url.starts_with("postgres:") || settings.url.starts_with("postgresql:") {
            (Dialect::Postgres, settings.url.clone())
        } else {
            return Err(StoreError::Config(
                "STOCKROOM_DATABASE_URL must start with sqlite:// or postgres://".to_owned(),
            ));
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.pool_max.max(1))
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .after_connect(move |conn, _| Box::pin(async move { prepare(conn, dialect).await }))
            .connect_with(options.clone())
            .await?;
        let writer = match dialect {
            Dialect::Postgres => {
                let mut conn = pool.acquire().await?;
                schema::migrate(&mut conn).await?;
                None
            }
            Dialect::Sqlite => {
                let mut conn = AnyConnection::connect_with(&options).await?;
                prepare(&mut conn, dialect).await?;
                schema::migrate(&mut conn).await?;
                let (tx, rx) = mpsc::channel(settings.queue_max.max(1));
                tokio::spawn(write_loop(conn, rx, settings.batch_max.max(1)));
                Some(tx)
            }
        };
        Ok(Self {
            dialect,
            pool,
            writer,
            conflict_retries_max: settings.conflict_retries_max,
            claim_lease_seconds: settings.claim_lease_seconds.max(1),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Takes the idempotency key, if any: `Ok(claim)` to go ahead, `Err(answer)` when the answer is already
    /// known (a replay, a mismatch, or another attempt still running).
    async fn claim(
        &self,
        idempotency: Option<Idempotency>,
    ) -> Result<Result<Option<(String, String)>, Answer>, StoreError> {
        let Some(idem) = idempotency else {
            return Ok(Ok(None));
        };
        let token = uuid::Uuid::now_v7().to_string();
        let key = idem.key.clone();
        Ok(match self.write(Work::Claim(idem, token, self.claim_lease_seconds)).await? {
            Done::Claim(Claim::Claimed(token)) => Ok(Some((key, token))),
            Done::Claim(Claim::Replay(answer)) => Err(answer),
            Done::Claim(Claim::Mismatch) => Err(Answer::idempotency_mismatch()),
            Done::Claim(Claim::InProgress) => Err(Answer::idempotency_in_progress()),
            _ => return Err(unexpected()),
        })
    }

    /// After a failed attempt, gives its claim back so a retry need not wait for the lease. Best effort: if this
    /// fails too, the lease runs out and a retry takes the claim over.
    async fn give_back(&self, claim: Option<(String, String)>, error: StoreError) -> StoreError {
        if let Some((key, token)) = claim
            && let Err(again) = self.write(Work::Unclaim(key, token)).await
        {
            tracing::warn!(error = %again, "could not give an idempotency claim back");
        }
        error
    }

    /// Books up to `limit` lapsed holds as expired, each in its own transaction; how many were booked.
    async fn book_lapsed(&self, limit: i64) -> Result<u64, StoreError> {
        let due = {
            let mut conn = self.pool.acquire().await?;
            runner::due_reservations(&mut conn, now(), limit).await?
        };
        let mut booked = 0;
        for id in due {
            let answer = self.execute(Command::Expire { id }, None, None).await?;
            if answer.body.get("status").and_then(|s| s.as_str()) == Some("expired") {
                booked += 1;
            }
        }
        Ok(booked)
    }

    async fn unit(&self, work: Work) -> Result<(), StoreError> {
        match self.write(work).await? {
            Done::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// Runs a write: through the SQLite writer, or in its own PostgreSQL transaction, retried on deadlock.
    async fn write(&self, work: Work) -> Result<Done, StoreError> {
        if let Some(writer) = &self.writer {
            let (reply, answer) = oneshot::channel();
            writer.try_send(Job { work, reply }).map_err(|e| match e {
                // A full queue is back-pressure: say "try again" rather than queue without bound.
                mpsc::error::TrySendError::Full(_) => StoreError::Transient(sqlx::Error::PoolTimedOut),
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
            return answer.await.map_err(|_| StoreError::Closed)?;
        }
        // Spawned, so that a client hanging up cannot cancel a write halfway and strand its idempotency claim.
        let this = self.clone();
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let mut conn = this.pool.acquire().await?;
                match perform(&mut conn, this.dialect, &work).await {
                    Err(e) if is_retryable_conflict(&e) && attempt < this.conflict_retries_max => attempt += 1,
                    other => return other,
                }
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// `sqlite://PATH` → the same, creating the file if missing.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Per-connection settings. SQLite: WAL so readers never block the writer, FULL sync so that an acknowledged
/// write survives power loss (the batch commit amortises the fsync), a busy timeout for the rare checkpoint.
async fn prepare(conn: &mut AnyConnection, dialect: Dialect) -> Result<(), sqlx::Error> {
    match dialect {
        Dialect::Sqlite => {
            conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON")
                .await?;
        }
        Dialect::Postgres => {
            // A statement stuck behind a lock for this long is better answered with 503 and retried.
            conn.execute("SET statement_timeout = '10s'; SET lock_timeout = '5s'").await?;
        }
    }
    Ok(())
}

/// The SQLite writer: takes whatever is queued (up to `batch_max`), applies each job in its own savepoint
/// inside one transaction, commits once, and only then answers. One fsync serves the whole batch.
async fn write_loop(mut conn: AnyConnection, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let mut results = Vec::with_capacity(batch.len());
        let committed = async {
            let mut tx = conn.begin().await?;
            for job in &batch {
                results.push(perform(&mut tx, Dialect::Sqlite, &job.work).await);
            }
            tx.commit().await
        }
        .await;
        match committed {
            Ok(()) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite batch commit failed");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Transient(sqlx::Error::WorkerCrashed)));
                }
            }
        }
    }
}

async fn perform(conn: &mut AnyConnection, dialect: Dialect, work: &Work) -> Result<Done, StoreError> {
    match work {
        Work::Claim(idem, token, lease) => runner::claim(conn, idem, token, *lease).await.map(Done::Claim),
        Work::Unclaim(key, token) => runner::unclaim(conn, key, token).await.map(|()| Done::Unit),
        Work::Finish(key, token, answer) => runner::finish_alone(conn, key, token, answer).await.map(|()| Done::Unit),
        Work::Execute(command, claim, delivery) => {
            let claim = claim.as_ref().map(|(k, t)| (k.as_str(), t.as_str()));
            runner::execute(conn, dialect, command, claim, delivery.as_ref()).await.map(Done::Answer)
        }
        Work::Enqueue(commands) => queues::enqueue(conn, commands).await.map(|()| Done::Unit),
        Work::Settle(id, settled) => queues::settle(conn, id, settled).await.map(|()| Done::Unit),
        Work::MarkPublished(ids) => queues::mark_published(conn, ids).await.map(|()| Done::Unit),
        Work::RecordCountsFile(file) => queues::record_counts_file(conn, file).await.map(Done::Flag),
        Work::PutShopifyItem(item, sku) => {
            queues::put_mapping(conn, "shopify_items", "inventory_item_id", "sku", item, sku.as_str())
                .await
                .map(|()| Done::Unit)
        }
        Work::PutShopifyLocation(id, location) => {
            queues::put_mapping(conn, "shopify_locations", "location_id", "location", id, location.as_str())
                .await
                .map(|()| Done::Unit)
        }
        Work::PutLocation(id, name, priority) => put_location(conn, id, name, *priority).await,
        Work::PutPolicy(sku, update) => put_policy(conn, sku, update).await.map(Done::Policy),
        Work::Record(events, now) => analytics::record(conn, dialect, events, *now).await.map(Done::Recorded),
    }
}

async fn put_location(conn: &mut AnyConnection, id: &Location, name: &str, priority: i64) -> Result<Done, StoreError> {
    let now = chrono::Utc::now().timestamp_micros();
    let mut tx = conn.begin().await?;
    let created = sqlx::query(
        "INSERT INTO locations (id, name, priority, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(priority)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !created {
        sqlx::query("UPDATE locations SET name = $1, priority = $2, updated_at = $3 WHERE id = $4")
            .bind(name)
            .bind(priority)
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Done::Location(LocationRecord { location: id.clone(), name: name.to_owned(), priority }, created))
}

async fn put_policy(conn: &mut AnyConnection, sku: &Sku, update: &PolicyUpdate) -> Result<Policy, StoreError> {
    let now = chrono::Utc::now().timestamp_micros();
    let mut tx = conn.begin().await?;
    sqlx::query(
        "INSERT INTO sku_policies (sku, low_stock_days, reorder_point, safety_stock, updated_at) VALUES ($1, NULL, NULL, 0, $2) \
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(sku.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let current = read_policy(&mut tx, sku).await?;
    let next = Policy {
        sku: sku.clone(),
        low_stock_days: update.low_stock_days.unwrap_or(current.low_stock_days),
        reorder_point: update.reorder_point.unwrap_or(current.reorder_point),
        safety_stock: update.safety_stock.unwrap_or(current.safety_stock),
    };
    sqlx::query("UPDATE sku_policies SET low_stock_days = $1, reorder_point = $2, safety_stock = $3, updated_at = $4 WHERE sku = $5")
        .bind(next.low_stock_days)
        .bind(next.reorder_point)
        .bind(next.safety_stock)
        .bind(now)
        .bind(sku.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(next)
}

async fn read_policy(conn: &mut AnyConnection, sku: &Sku) -> Result<Policy, StoreError> {
    let row = sqlx::query("SELECT low_stock_days, reorder_point, safety_stock FROM sku_policies WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(Policy {
        sku: sku.clone(),
        low_stock_days: row.try_get(0)?,
        reorder_point: row.try_get(1)?,
        safety_stock: row.try_get(2)?,
    })
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("the writer answered a different kind of job".to_owned())
}

#[async_trait]
impl AnalyticsReader for SqlStore {
    async fn stock_health(&self, location: Option<&str>, now: Timestamp) -> Result<Vec<Health>, StoreError> {
        analytics::stock_health(&mut *self.pool.acquire().await?, location, now).await
    }

    async fn sales(
        &self,
        sku: &str,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SalesPoint>, StoreError> {
        analytics::sales(&mut *self.pool.acquire().await?, sku, bucket, from, to).await
    }

    async fn top_sellers(&self, window: Window, limit: i64, now: Timestamp) -> Result<Vec<TopSeller>, StoreError> {
        analytics::top_sellers(&mut *self.pool.acquire().await?, window, limit, now).await
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn record_events(&self, events: Vec<ObservedEvent>, now: Timestamp) -> Result<Recorded, StoreError> {
        match self.write(Work::Record(events, now)).await? {
            Done::Recorded(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn put_location(
        &self,
        id: Location,
        name: String,
        priority: i64,
    ) -> Result<(LocationRecord, bool), StoreError> {
        match self.write(Work::PutLocation(id, name, priority)).await? {
            Done::Location(record, created) => Ok((record, created)),
            _ => Err(unexpected()),
        }
    }

    async fn locations(&self) -> Result<Vec<LocationRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, priority FROM locations ORDER BY priority, id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(LocationRecord {
                    location: parse(Location::parse, r.try_get::<String, _>(0)?)?,
                    name: r.try_get(1)?,
                    priority: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn stock(&self, skus: &[Sku], now: Timestamp) -> Result<Vec<StockView>, StoreError> {
        let wanted: BTreeSet<&Sku> = skus.iter().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        // Holds past their expiry still sit in `reserved` until booked; they no longer count (invariant 6).
        let n = wanted.len();
        let sql = format!(
            "SELECT l.sku, l.location, l.on_hand, l.reserved, l.committed, \
             COALESCE((SELECT p.safety_stock FROM sku_policies p WHERE p.sku = l.sku), 0), \
             COALESCE((SELECT CAST(SUM(a.quantity) AS BIGINT) FROM allocations a \
                       WHERE a.sku = l.sku AND a.location = l.location AND a.state = 'held' AND a.expires_at <= ${}), 0) \
             FROM levels l WHERE l.sku IN ({}) ORDER BY l.sku, l.location",
            n + 1,
            list(1, n)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for s in &wanted {
            q = q.bind(s.as_str());
        }
        let rows = q.bind(now.timestamp_micros()).fetch_all(&self.pool).await?;
        let mut by_sku: std::collections::BTreeMap<String, Vec<(Location, Levels)>> = Default::default();
        for r in &rows {
            let lapsed: i64 = r.try_get(6)?;
            let levels = Levels {
                on_hand: r.try_get(2)?,
                reserved: r.try_get::<i64, _>(3)? - lapsed,
                committed: r.try_get(4)?,
                safety_stock: r.try_get(5)?,
            };
            by_sku
                .entry(r.try_get(0)?)
                .or_default()
                .push((parse(Location::parse, r.try_get::<String, _>(1)?)?, levels));
        }
        // A sku with a policy but no stock yet is known, with no locations.
        let sql = format!("SELECT sku FROM sku_policies WHERE sku IN ({})", list(1, n));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for s in &wanted {
            q = q.bind(s.as_str());
        }
        for r in q.fetch_all(&self.pool).await? {
            by_sku.entry(r.try_get(0)?).or_default();
        }
        let mut seen = BTreeSet::new();
        Ok(skus
            .iter()
            .filter(|s| seen.insert(*s))
            .filter_map(|s| by_sku.remove(s.as_str()).map(|rows| StockView::new(s.clone(), rows)))
            .collect())
    }

    async fn reservation(&self, id: &ReservationId, now: Timestamp) -> Result<Option<ReservationView>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let r = runner::load_reservation(&mut conn, self.dialect, id, false).await?;
        Ok(r.map(|r| ReservationView::of(&r, now)))
    }

    async fn movements(&self, filter: &MovementFilter) -> Result<MovementPage, StoreError> {
        let mut clauses = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(sku) = &filter.sku {
            binds.push(sku.to_string());
            clauses.push(format!("sku = ${}", binds.len()));
        }
        if let Some(location) = &filter.location {
            binds.push(location.to_string());
            clauses.push(format!("location = ${}", binds.len()));
        }
        if let Some(after) = &filter.after {
            binds.push(after.clone());
            clauses.push(format!("id > ${}", binds.len()));
        }
        let filter_sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!(
            "SELECT id, at, sku, location, kind, on_hand_delta, reserved_delta, committed_delta, reason, reference, cause \
             FROM movements {filter_sql} ORDER BY id LIMIT ${}",
            binds.len() + 1
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        // One more than asked tells whether there is a next page.
        let rows = q.bind(filter.limit + 1).fetch_all(&self.pool).await?;
        let mut movements = Vec::with_capacity(rows.len());
        for r in rows.iter().take(usize::try_from(filter.limit).unwrap_or(0)) {
            let kind: String = r.try_get(4)?;
            movements.push(MovementRow {
                id: r.try_get(0)?,
                at: from_micros(r.try_get(1)?)?,
                sku: parse(Sku::parse, r.try_get::<String, _>(2)?)?,
                location: parse(Location::parse, r.try_get::<String, _>(3)?)?,
                kind: MovementKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("movement kind {kind:?}")))?,
                on_hand_delta: r.try_get(5)?,
                reserved_delta: r.try_get(6)?,
                committed_delta: r.try_get(7)?,
                reason: r.try_get(8)?,
                reference: r.try_get(9)?,
                cause: r.try_get(10)?,
            });
        }
        let next = if rows.len() > movements.len() { movements.last().map(|m| m.id.clone()) } else { None };
        Ok(MovementPage { movements, next })
    }

    async fn put_policy(&self, sku: Sku, update: PolicyUpdate) -> Result<Policy, StoreError> {
        match self.write(Work::PutPolicy(sku, update)).await? {
            Done::Policy(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }

    async fn execute(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
        delivery: Option<Delivery>,
    ) -> Result<Answer, StoreError> {
        let claim = match self.claim(idempotency).await? {
            Ok(claim) => claim,
            Err(answer) => return Ok(answer),
        };
        match self.write(Work::Execute(command, claim.clone(), delivery)).await {
            Ok(Done::Answer(answer)) => Ok(answer),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(self.give_back(claim, e).await),
        }
    }

    async fn expire_due(&self, limit: i64, idempotency: Option<Idempotency>) -> Result<Answer, StoreError> {
        let claim = match self.claim(idempotency).await? {
            Ok(claim) => claim,
            Err(answer) => return Ok(answer),
        };
        // Each lapsed hold is booked in its own transaction; booking one twice is a no-op, so the summary can be
        // stored afterwards without putting the whole run in one transaction.
        let answer = match self.book_lapsed(limit).await {
            Ok(expired) => Answer::new(200, serde_json::json!({ "expired": expired })),
            Err(e) => return Err(self.give_back(claim, e).await),
        };
        if let Some((key, token)) = claim {
            match self.write(Work::Finish(key, token, answer.clone())).await? {
                Done::Unit => {}
                _ => return Err(unexpected()),
            }
        }
        Ok(answer)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    async fn enqueue(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError> {
        self.unit(Work::Enqueue(commands)).await
    }

    async fn due_commands(&self, limit: i64) -> Result<Vec<QueuedCommand>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        queues::due_commands(&mut conn, limit).await
    }

    async fn settle(&self, id: &str, settled: Settled) -> Result<(), StoreError> {
        self.unit(Work::Settle(id.to_owned(), settled)).await
    }

    async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        queues::unpublished(&mut conn, limit).await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        self.unit(Work::MarkPublished(ids.to_vec())).await
    }

    async fn record_counts_file(&self, file: CountsFile) -> Result<bool, StoreError> {
        match self.write(Work::RecordCountsFile(file)).await? {
            Done::Flag(new) => Ok(new),
            _ => Err(unexpected()),
        }
    }

    async fn put_shopify_item(&self, inventory_item_id: String, sku: Sku) -> Result<(), StoreError> {
        self.unit(Work::PutShopifyItem(inventory_item_id, sku)).await
    }

    async fn put_shopify_location(&self, location_id: String, location: Location) -> Result<(), StoreError> {
        self.unit(Work::PutShopifyLocation(location_id, location)).await
    }

    async fn shopify_mapping(
        &self,
        inventory_item_id: &str,
        location_id: &str,
    ) -> Result<(Option<Sku>, Option<Location>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        queues::shopify_mapping(&mut conn, inventory_item_id, location_id).await
    }
}
