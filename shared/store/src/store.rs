//! [`SqlStore`]: the store over any backend, with one set of rules. The backend (SQLite, PostgreSQL, Spanner)
//! gives connections and runs write jobs its own way; what the jobs do is the same everywhere.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

use async_trait::async_trait;
use stockroom_domain::analytics::{Bucket, Health, SalesPoint, TopSeller, Window};
use stockroom_domain::{Levels, Location, MovementKind, ReservationId, Sku, Timestamp};

use crate::analytics::{AnalyticsReader, ObservedEvent, Recorded};
use crate::backend::spanner::{Spanner, SpannerSettings};
use crate::backend::{self, Backend};
use crate::clock::{Clock, Ids, SystemClock, UuidV7};
use crate::error::StoreError;
use crate::model::{
    Command, CountsFile, Delivery, Idempotency, LocationRecord, MovementFilter, MovementPage, MovementRow, OutboxEvent,
    Policy, PolicyUpdate, QueuedCommand, ReservationView, Settled, StockView,
};
use crate::outcome::{Answer, Effect, Outcome, Render};
use crate::ports::{AnalyticsRecorder, CommandInbox, CountsFiles, ExternalIds, Ledger, Outbox, Ping};
use crate::sql::{Conn, Dialect, Row, analytics, ledger, list, query, queues, schema};

/// Tuning, each with its unit. Defaults suit one small machine.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH`, `postgres://…` or `spanner://projects/P/instances/I/databases/D`. A secret: a URL may carry
    /// a password, so `Debug` never shows it.
    pub url: SecretString,
    /// PostgreSQL connections, SQLite reader connections, or Spanner sessions.
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
    /// Where time comes from (a test's clock moves when told).
    pub clock: Arc<dyn Clock>,
    /// Where ids come from.
    pub ids: Arc<dyn Ids>,
    /// Migrate no further than this migration (upgrade tests start from an old schema); the newest when unset.
    pub schema_target: Option<String>,
    /// How outcomes become the answers stored for replays (the edge's rendering).
    pub render: Render,
    /// How Spanner is reached, for `spanner://` URLs.
    pub spanner: SpannerSettings,
}

impl StoreSettings {
    pub fn new(url: impl Into<String>, render: Render) -> Self {
        Self {
            url: SecretString::from(url.into()),
            pool_max: 16,
            acquire_timeout_ms: 5_000,
            batch_max: 128,
            queue_max: 4_096,
            conflict_retries_max: 3,
            claim_lease_seconds: 10,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7),
            schema_target: None,
            render,
            spanner: SpannerSettings::default(),
        }
    }
}

/// Times a start's migration is run again after meeting another start (200 ms apart).
const MIGRATE_ATTEMPTS_MAX: u32 = 100;

/// What [`open`] gives: the backend the URL names, a connection for setting it up, and the Spanner backend
/// itself when it is one (for what only Spanner does: dropping a test's database).
type Opened = (Arc<dyn Backend>, Box<dyn Conn>, Option<Arc<Spanner>>);

async fn open(settings: &StoreSettings) -> Result<Opened, StoreError> {
    let url = settings.url.expose_secret();
    let tuning = backend::sqlx::SqlxSettings {
        pool_max: settings.pool_max,
        acquire_timeout_ms: settings.acquire_timeout_ms,
        batch_max: settings.batch_max,
        queue_max: settings.queue_max,
        conflict_retries_max: settings.conflict_retries_max,
    };
    Ok(match settings.kind() {
        Some(StoreKind::Sqlite) => {
            let (b, setup) = backend::sqlx::Sqlite::open(url, &tuning).await?;
            (Arc::new(b), setup, None)
        }
        Some(StoreKind::Postgres) => {
            let (b, setup) = backend::sqlx::Postgres::open(url, &tuning).await?;
            (Arc::new(b), setup, None)
        }
        Some(StoreKind::Spanner) => {
            let (b, setup) =
                Spanner::open(url, &settings.spanner, settings.pool_max, settings.acquire_timeout_ms).await?;
            (Arc::new(b.clone()), setup, Some(b))
        }
        None => {
            return Err(StoreError::Config(
                "STOCKROOM_DATABASE_URL must start with sqlite://, postgres:// or spanner://".to_owned(),
            ));
        }
    })
}

/// The backend a store URL names, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
    Spanner,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Spanner => "spanner",
        }
    }
}

impl StoreSettings {
    /// Which backend the URL names (`None` for an unknown scheme), without reading anything secret out of it.
    pub fn kind(&self) -> Option<StoreKind> {
        let url = self.url.expose_secret();
        if url.starts_with("sqlite:") {
            Some(StoreKind::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(StoreKind::Postgres)
        } else if url.starts_with("spanner:") {
            Some(StoreKind::Spanner)
        } else {
            None
        }
    }
}

/// Direct statements against a store's database, beside its rules: for tests that look at what the store
/// keeps (the outbox, the command inbox) and drop the databases they made. Opens the database without
/// migrating it.
pub struct Inspect {
    backend: Arc<dyn Backend>,
    spanner: Option<Arc<Spanner>>,
}

impl Inspect {
    pub async fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let (backend, _, spanner) = open(settings).await?;
        Ok(Self { backend, spanner })
    }

    pub async fn rows(&self, sql: &str) -> Result<Vec<Row>, StoreError> {
        self.backend.reader().await?.fetch_all(query(sql.to_owned())).await
    }

    /// The plan the database makes for a hold's lookup of lapsed allocations on `skus` at `now`: the ledger's own
    /// statement behind `explain` (`EXPLAIN QUERY PLAN ` on SQLite, `EXPLAIN (ANALYZE, BUFFERS) ` on PostgreSQL),
    /// the last column of each row.
    pub async fn explain_lapsed_lookup(
        &self,
        explain: &str,
        skus: &BTreeSet<Sku>,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.backend.reader().await?.fetch_all(ledger::lapsed_allocations_query(skus, now, explain)).await?;
        rows.iter().map(|r| r.text(r.columns().saturating_sub(1))).collect()
    }

    /// One statement in a transaction of its own; the rows it changed.
    pub async fn execute(&self, sql: &str) -> Result<u64, StoreError> {
        let mut c = self.backend.reader().await?;
        c.begin().await?;
        let changed = c.execute(query(sql.to_owned())).await?;
        c.commit().await?;
        Ok(changed)
    }

    /// Drops a Spanner database (an emulator's, made for a test); the other backends' are dropped by their
    /// owners.
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        match &self.spanner {
            Some(spanner) => spanner.drop_database().await,
            None => Ok(()),
        }
    }
}

/// What every write job can reach besides its connection.
pub(crate) struct Ctx {
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn Ids>,
    pub render: Render,
}

/// The ledger over SQL. Cheap to clone.
#[derive(Clone)]
pub struct SqlStore {
    backend: Arc<dyn Backend>,
    ctx: Arc<Ctx>,
    claim_lease_seconds: i64,
    /// The migrations this start applied.
    migrated: Vec<&'static str>,
}

/// Writes, as data: the SQLite writer queues them, the other backends run (and re-run) them on a connection.
pub(crate) enum Work {
    Claim(Idempotency, String, i64),
    Unclaim(String, String),
    Finish(String, String, Answer),
    /// A command, with its idempotency key, claim token and lease: the key is taken in the command's transaction.
    Execute(Command, Option<(Idempotency, String, i64)>, Option<Delivery>),
    Enqueue(Vec<QueuedCommand>),
    Settle(String, Settled),
    MarkPublished(Vec<String>),
    RecordCountsFile(CountsFile),
    PutMapping(&'static queues::Mapping, String, String),
    PutLocation(Location, String, i64),
    PutPolicy(Sku, PolicyUpdate),
    Record(Vec<ObservedEvent>, Timestamp),
}

pub(crate) enum Done {
    Claim(ledger::Claim),
    Flag(bool),
    Unit,
    Outcome(Outcome),
    Location(LocationRecord, bool),
    Policy(Policy),
    Recorded(Recorded),
}

/// A write with what it needs to run: given to the backend, which may run it more than once.
pub(crate) struct Job {
    work: Work,
    ctx: Arc<Ctx>,
}

impl Job {
    pub(crate) async fn run(&self, c: &mut dyn Conn) -> Result<Done, StoreError> {
        let ctx = &*self.ctx;
        let now = ctx.clock.now();
        Ok(match &self.work {
            Work::Claim(idem, token, lease) => Done::Claim(ledger::claim(c, idem, token, *lease, now).await?),
            Work::Unclaim(key, token) => {
                ledger::unclaim(c, key, token).await?;
                Done::Unit
            }
            Work::Finish(key, token, answer) => {
                ledger::finish_alone(c, key, token, answer, now).await?;
                Done::Unit
            }
            Work::Execute(command, claim, delivery) => {
                let claim = claim.as_ref().map(|(idem, token, lease)| (idem, token.as_str(), *lease));
                Done::Outcome(ledger::execute(c, ctx, command, claim, delivery.as_ref()).await?)
            }
            Work::Enqueue(commands) => {
                queues::enqueue(c, commands, now).await?;
                Done::Unit
            }
            Work::Settle(id, settled) => {
                queues::settle(c, id, settled, now).await?;
                Done::Unit
            }
            Work::MarkPublished(ids) => {
                queues::mark_published(c, ids, now).await?;
                Done::Unit
            }
            Work::RecordCountsFile(file) => Done::Flag(queues::record_counts_file(c, file, now).await?),
            Work::PutMapping(mapping, id, target) => {
                queues::put_mapping(c, mapping, id, target, now).await?;
                Done::Unit
            }
            Work::PutLocation(id, name, priority) => {
                let (record, created) = put_location(c, id, name, *priority, now).await?;
                Done::Location(record, created)
            }
            Work::PutPolicy(sku, update) => Done::Policy(put_policy(c, sku, update, now).await?),
            Work::Record(events, at) => Done::Recorded(analytics::record(c, ctx, events, *at).await?),
        })
    }
}

impl SqlStore {
    /// Connects, brings the schema up to date, and (SQLite) starts the writer.
    pub async fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        let (backend, mut setup, _) = open(settings).await?;
        let holder = settings.ids.next_id();
        let mut attempt = 0;
        // Migrating is safe to run again from the start. Instances starting together meet on the schema tables
        // (SQLite: busy; Spanner: another process's transaction aborts ours), and try again.
        let migrated = loop {
            match schema::migrate(&mut *setup, &holder, settings.schema_target.as_deref()).await {
                Err(e) if e.is_transient() && attempt < MIGRATE_ATTEMPTS_MAX => {
                    tracing::info!(attempt, error = %e, "migrating met another start; again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    attempt += 1;
                }
                other => break other?,
            }
        };
        drop(setup);
        let ctx = Arc::new(Ctx { clock: settings.clock.clone(), ids: settings.ids.clone(), render: settings.render });
        Ok(Self { backend, ctx, claim_lease_seconds: settings.claim_lease_seconds.max(1), migrated })
    }

    /// The migrations this start applied, in order: none when the schema was current, or another instance
    /// starting at the same time applied them.
    pub fn migrated_now(&self) -> &[&'static str] {
        &self.migrated
    }

    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// The store's clock.
    pub fn now(&self) -> Timestamp {
        self.ctx.clock.now()
    }

    async fn write(&self, work: Work) -> Result<Done, StoreError> {
        self.backend.write(Job { work, ctx: self.ctx.clone() }).await
    }

    async fn unit(&self, work: Work) -> Result<(), StoreError> {
        match self.write(work).await? {
            Done::Unit => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// Takes the idempotency key, if any: `Ok(claim)` to go ahead, `Err(outcome)` when the outcome is already
    /// known (a replay, a mismatch, or another attempt still running).
    async fn claim(
        &self,
        idempotency: Option<Idempotency>,
    ) -> Result<Result<Option<(String, String)>, Outcome>, StoreError> {
        let Some(idem) = idempotency else {
            return Ok(Ok(None));
        };
        let token = self.ctx.ids.next_id();
        let key = idem.key.clone();
        Ok(match self.write(Work::Claim(idem, token, self.claim_lease_seconds)).await? {
            Done::Claim(ledger::Claim::Claimed(token)) => Ok(Some((key, token))),
            Done::Claim(ledger::Claim::Replay(answer)) => Err(Outcome::Replayed(answer)),
            Done::Claim(ledger::Claim::Mismatch) => Err(Outcome::Mismatch),
            Done::Claim(ledger::Claim::InProgress) => Err(Outcome::InProgress),
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
        let due = ledger::due_reservations(&mut *self.backend.reader().await?, self.now(), limit).await?;
        let mut booked = 0;
        for id in due {
            let outcome = self.execute(Command::Expire { id }, None, None).await?;
            if let Outcome::Done(Effect::Reservation { view, .. }) = outcome
                && view.status == stockroom_domain::ReservationStatus::Expired
            {
                booked += 1;
            }
        }
        Ok(booked)
    }
}

async fn put_location(
    c: &mut dyn Conn,
    id: &Location,
    name: &str,
    priority: i64,
    now: Timestamp,
) -> Result<(LocationRecord, bool), StoreError> {
    c.begin().await?;
    let created = c
        .execute(
            query(
                "INSERT INTO locations (id, name, priority, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(name)
            .bind(priority)
            .bind(now),
        )
        .await?
        == 1;
    if !created {
        c.execute(
            query("UPDATE locations SET name = $1, priority = $2, updated_at = $3 WHERE id = $4")
                .bind(name)
                .bind(priority)
                .bind(now)
                .bind(id.as_str()),
        )
        .await?;
    }
    c.commit().await?;
    Ok((LocationRecord { location: id.clone(), name: name.to_owned(), priority }, created))
}

async fn put_policy(c: &mut dyn Conn, sku: &Sku, update: &PolicyUpdate, now: Timestamp) -> Result<Policy, StoreError> {
    c.begin().await?;
    c.execute(
        query(
            "INSERT INTO sku_policies (sku, low_stock_days, reorder_point, safety_stock, updated_at) VALUES ($1, NULL, NULL, 0, $2) \
             ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku.as_str())
        .bind(now),
    )
    .await?;
    let row = c
        .fetch_one(
            query("SELECT low_stock_days, reorder_point, safety_stock FROM sku_policies WHERE sku = $1")
                .bind(sku.as_str()),
        )
        .await?;
    let next = Policy {
        sku: sku.clone(),
        low_stock_days: update.low_stock_days.unwrap_or(row.opt_int(0)?),
        reorder_point: update.reorder_point.unwrap_or(row.opt_int(1)?),
        safety_stock: update.safety_stock.unwrap_or(row.int(2)?),
    };
    c.execute(
        query("UPDATE sku_policies SET low_stock_days = $1, reorder_point = $2, safety_stock = $3, updated_at = $4 WHERE sku = $5")
            .bind(next.low_stock_days)
            .bind(next.reorder_point)
            .bind(next.safety_stock)
            .bind(now)
            .bind(sku.as_str()),
    )
    .await?;
    c.commit().await?;
    Ok(next)
}

fn unexpected() -> StoreError {
    StoreError::Corrupt("the writer answered a different kind of job".to_owned())
}

#[async_trait]
impl AnalyticsReader for SqlStore {
    async fn stock_health(&self, location: Option<&str>, now: Timestamp) -> Result<Vec<Health>, StoreError> {
        analytics::stock_health(&mut *self.backend.reader().await?, location, now).await
    }

    async fn sales(
        &self,
        sku: &str,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SalesPoint>, StoreError> {
        analytics::sales(&mut *self.backend.reader().await?, sku, bucket, from, to).await
    }

    async fn top_sellers(&self, window: Window, limit: i64, now: Timestamp) -> Result<Vec<TopSeller>, StoreError> {
        analytics::top_sellers(&mut *self.backend.reader().await?, window, limit, now).await
    }
}

#[async_trait]
impl AnalyticsRecorder for SqlStore {
    async fn record_events(&self, events: Vec<ObservedEvent>) -> Result<Recorded, StoreError> {
        match self.write(Work::Record(events, self.now())).await? {
            Done::Recorded(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
}

#[async_trait]
impl Ledger for SqlStore {
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
        let rows = self
            .backend
            .reader()
            .await?
            .fetch_all(query("SELECT id, name, priority FROM locations ORDER BY priority, id"))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LocationRecord { location: r.parsed(0, Location::parse)?, name: r.text(1)?, priority: r.int(2)? })
            })
            .collect()
    }

    async fn put_policy(&self, sku: Sku, update: PolicyUpdate) -> Result<Policy, StoreError> {
        match self.write(Work::PutPolicy(sku, update)).await? {
            Done::Policy(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }

    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockView>, StoreError> {
        let wanted: BTreeSet<&Sku> = skus.iter().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut c = self.backend.reader().await?;
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
        let rows = c.fetch_all(query(sql).bind_all(wanted.iter().map(|s| s.as_str())).bind(now)).await?;
        let mut by_sku: BTreeMap<String, Vec<(Location, Levels)>> = BTreeMap::new();
        for r in &rows {
            let levels = Levels {
                on_hand: r.int(2)?,
                reserved: r.int(3)? - r.int(6)?,
                committed: r.int(4)?,
                safety_stock: r.int(5)?,
            };
            by_sku.entry(r.text(0)?).or_default().push((r.parsed(1, Location::parse)?, levels));
        }
        // A sku with a policy but no stock yet is known, with no locations.
        let sql = format!("SELECT sku FROM sku_policies WHERE sku IN ({})", list(1, n));
        for r in c.fetch_all(query(sql).bind_all(wanted.iter().map(|s| s.as_str()))).await? {
            by_sku.entry(r.text(0)?).or_default();
        }
        let mut seen = BTreeSet::new();
        Ok(skus
            .iter()
            .filter(|s| seen.insert(*s))
            .filter_map(|s| by_sku.remove(s.as_str()).map(|rows| StockView::new(s.clone(), rows)))
            .collect())
    }

    async fn reservation(&self, id: &ReservationId) -> Result<Option<ReservationView>, StoreError> {
        let r = ledger::load_reservation(&mut *self.backend.reader().await?, id, false).await?;
        Ok(r.map(|r| ReservationView::of(&r, self.now())))
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
        // One more than asked tells whether there is a next page.
        let q = query(sql).bind_all(binds).bind(filter.limit + 1);
        let rows = self.backend.reader().await?.fetch_all(q).await?;
        let mut movements = Vec::with_capacity(rows.len());
        for r in rows.iter().take(usize::try_from(filter.limit).unwrap_or(0)) {
            movements.push(MovementRow {
                id: r.text(0)?,
                at: r.time(1)?,
                sku: r.parsed(2, Sku::parse)?,
                location: r.parsed(3, Location::parse)?,
                kind: r.parsed(4, |k| MovementKind::parse(k).ok_or_else(|| format!("movement kind {k:?}")))?,
                on_hand_delta: r.int(5)?,
                reserved_delta: r.int(6)?,
                committed_delta: r.int(7)?,
                reason: r.text(8)?,
                reference: r.opt_text(9)?,
                cause: r.opt_text(10)?,
            });
        }
        let next = if rows.len() > movements.len() { movements.last().map(|m| m.id.clone()) } else { None };
        Ok(MovementPage { movements, next })
    }

    async fn execute(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
        delivery: Option<Delivery>,
    ) -> Result<Outcome, StoreError> {
        // No claim of its own: the command's transaction takes the key, so a failed or killed attempt leaves the
        // key free for its retry at once.
        let claim = idempotency.map(|idem| (idem, self.ctx.ids.next_id(), self.claim_lease_seconds));
        match self.write(Work::Execute(command, claim, delivery)).await? {
            Done::Outcome(outcome) => Ok(outcome),
            _ => Err(unexpected()),
        }
    }

    async fn expire_due(&self, limit: i64, idempotency: Option<Idempotency>) -> Result<Outcome, StoreError> {
        let claim = match self.claim(idempotency).await? {
            Ok(claim) => claim,
            Err(known) => return Ok(known),
        };
        // Each lapsed hold is booked in its own transaction; booking one twice is a no-op, so the summary can be
        // stored afterwards without putting the whole run in one transaction.
        let outcome = match self.book_lapsed(limit).await {
            Ok(count) => Outcome::Done(Effect::Expired { count }),
            Err(e) => return Err(self.give_back(claim, e).await),
        };
        if let Some((key, token)) = claim {
            self.unit(Work::Finish(key, token, (self.ctx.render)(&outcome))).await?;
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Ping for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.backend.reader().await?.fetch_one(query("SELECT 1")).await?;
        Ok(())
    }
}

#[async_trait]
impl CommandInbox for SqlStore {
    async fn enqueue(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError> {
        self.unit(Work::Enqueue(commands)).await
    }

    async fn due_commands(&self, limit: i64) -> Result<Vec<QueuedCommand>, StoreError> {
        queues::due_commands(&mut *self.backend.reader().await?, limit, self.now()).await
    }

    async fn settle(&self, id: &str, settled: Settled) -> Result<(), StoreError> {
        self.unit(Work::Settle(id.to_owned(), settled)).await
    }
}

#[async_trait]
impl Outbox for SqlStore {
    async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        queues::unpublished(&mut *self.backend.reader().await?, limit).await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        self.unit(Work::MarkPublished(ids.to_vec())).await
    }
}

#[async_trait]
impl CountsFiles for SqlStore {
    async fn record_counts_file(&self, file: CountsFile) -> Result<bool, StoreError> {
        match self.write(Work::RecordCountsFile(file)).await? {
            Done::Flag(new) => Ok(new),
            _ => Err(unexpected()),
        }
    }
}

#[async_trait]
impl ExternalIds for SqlStore {
    async fn put_shopify_item(&self, inventory_item_id: String, sku: Sku) -> Result<(), StoreError> {
        self.unit(Work::PutMapping(&queues::SHOPIFY_ITEMS, inventory_item_id, sku.to_string())).await
    }

    async fn put_shopify_location(&self, location_id: String, location: Location) -> Result<(), StoreError> {
        self.unit(Work::PutMapping(&queues::SHOPIFY_LOCATIONS, location_id, location.to_string())).await
    }

    async fn shopify_mapping(
        &self,
        inventory_item_id: &str,
        location_id: &str,
    ) -> Result<(Option<Sku>, Option<Location>), StoreError> {
        queues::shopify_mapping(&mut *self.backend.reader().await?, inventory_item_id, location_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_of_store_is_read_from_the_scheme_alone() {
        fn render(_: &Outcome) -> Answer {
            Answer { status: 200, body: serde_json::Value::Null }
        }
        let kind = |url: &str| StoreSettings::new(url, render).kind();
        assert_eq!(kind("sqlite://stockroom.db"), Some(StoreKind::Sqlite));
        assert_eq!(kind("postgres://u:secret@h/db"), Some(StoreKind::Postgres));
        assert_eq!(kind("postgresql://u@h/db"), Some(StoreKind::Postgres));
        assert_eq!(kind("spanner://projects/p/instances/i/databases/d"), Some(StoreKind::Spanner));
        assert_eq!(kind("mysql://h/db"), None);
        assert_eq!(kind("sqlite_but_not://x"), None);
    }
}
