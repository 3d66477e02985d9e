//! SQLite (embedded, the default) and PostgreSQL, both through sqlx's `Any` driver.
//!
//! SQLite's reads run on sqlx's pool; its writes go to one writer (backend/sqlite_writer.rs, on rusqlite) that
//! applies queued jobs in batches: one transaction per batch, a savepoint per job, one fsync for all of them. PostgreSQL runs each job on its own pooled connection, in its own
//! transactions, and runs it again when it lost a deadlock or a serialization conflict.

use std::ops::DerefMut;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Database, Executor};
// sqlx re-exports the transaction managers but not their trait; its methods are how a connection's
// transactions are opened and closed one call at a time (its `Transaction` guard borrows the connection).
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{mpsc, oneshot};

use super::Backend;
use crate::error::StoreError;
use crate::sql::{Conn, Dialect, Query, Row};
use crate::store::{Done, Job};

type Manager = <Any as Database>::TransactionManager;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Transient(e.into()),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default().into_owned();
                if db.is_unique_violation() {
                    Self::Duplicate(e.into())
                } else if code == "40001" || code == "40P01" {
                    // PostgreSQL: serialization failure, deadlock.
                    Self::Conflict(e.into())
                } else if code.starts_with("08")
                    || code.starts_with("40")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "55P03"
                    || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                {
                    // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback, 53 resources, 57 operator
                    // intervention (shutdown), 55P03 lock not available. SQLite primary codes: 5 BUSY, 6 LOCKED
                    // (extended codes keep the low byte).
                    Self::Transient(e.into())
                } else {
                    Self::Internal(e.into())
                }
            }
            _ => Self::Internal(e.into()),
        }
    }
}

/// A sqlx connection as the rules use it: pooled, or the one migrations run on.
pub(crate) struct SqlxConn<C: DerefMut<Target = AnyConnection> + Send> {
    conn: C,
    dialect: Dialect,
    /// Transactions and savepoints this wrapper opened and has not closed; rolled back when it is dropped.
    opened: usize,
}

impl<C: DerefMut<Target = AnyConnection> + Send> SqlxConn<C> {
    pub(crate) fn new(conn: C, dialect: Dialect) -> Self {
        Self { conn, dialect, opened: 0 }
    }
}

impl<C: DerefMut<Target = AnyConnection> + Send> Drop for SqlxConn<C> {
    /// A job that failed part way leaves its transactions open: roll them back. sqlx queues the rollback and
    /// sends it before the connection's next statement (or when a pooled connection is returned).
    fn drop(&mut self) {
        for _ in 0..self.opened {
            Manager::start_rollback(&mut self.conn);
        }
    }
}

fn statement(q: &Query) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments> {
    let mut s = match &q.sql {
        std::borrow::Cow::Borrowed(sql) => sqlx::query(*sql),
        std::borrow::Cow::Owned(sql) => sqlx::query(AssertSqlSafe(sql.clone())),
    };
    for p in &q.params {
        s = match p {
            crate::sql::Param::Int(v) => s.bind(*v),
            crate::sql::Param::Text(v) => s.bind(v.clone()),
        };
    }
    s
}

#[async_trait]
impl<C: DerefMut<Target = AnyConnection> + Send> Conn for SqlxConn<C> {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        Manager::begin(&mut self.conn, None).await?;
        self.opened += 1;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        self.opened = self.opened.saturating_sub(1);
        Ok(Manager::commit(&mut self.conn).await?)
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        self.opened = self.opened.saturating_sub(1);
        Ok(Manager::rollback(&mut self.conn).await?)
    }

    async fn execute(&mut self, q: Query) -> Result<u64, StoreError> {
        Ok(statement(&q).execute(&mut *self.conn).await?.rows_affected())
    }

    async fn fetch_all(&mut self, q: Query) -> Result<Vec<Row>, StoreError> {
        Ok(statement(&q).fetch_all(&mut *self.conn).await?.into_iter().map(Row::Sqlx).collect())
    }

    async fn apply_ddl(&mut self, statements: Vec<String>) -> Result<(), StoreError> {
        for s in statements {
            sqlx::raw_sql(AssertSqlSafe(s)).execute(&mut *self.conn).await?;
        }
        Ok(())
    }
}

/// Tuning the two sqlx backends take from [`crate::StoreSettings`].
pub(crate) struct SqlxSettings {
    pub pool_max: u32,
    pub acquire_timeout_ms: u64,
    pub batch_max: usize,
    pub queue_max: usize,
    pub conflict_retries_max: u32,
}

/// SQLite: readers from a pool, every write through one writer thread.
pub(crate) struct Sqlite {
    pool: AnyPool,
    writer: mpsc::Sender<super::sqlite_writer::WriteRequest>,
}

/// PostgreSQL: one pool for reads and writes.
pub(crate) struct Postgres {
    pool: AnyPool,
    conflict_retries_max: u32,
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

/// Every SQLite connection's settings, the writer's (backend/sqlite_writer.rs) as the readers'.
pub(crate) const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON";

/// Per-connection settings. SQLite: WAL so readers never block the writer, FULL sync so that an acknowledged
/// write survives power loss (the batch commit amortises the fsync), a busy timeout for the rare checkpoint.
async fn prepare(conn: &mut AnyConnection, dialect: Dialect) -> Result<(), sqlx::Error> {
    match dialect {
        Dialect::Sqlite => {
            conn.execute(SQLITE_PRAGMAS).await?;
        }
        Dialect::Postgres | Dialect::Spanner => {
            // A statement stuck behind a lock for this long is better answered with 503 and retried.
            conn.execute("SET statement_timeout = '10s'; SET lock_timeout = '5s'").await?;
        }
    }
    Ok(())
}

async fn pool(url: &str, dialect: Dialect, s: &SqlxSettings) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(s.pool_max.max(1))
        .acquire_timeout(Duration::from_millis(s.acquire_timeout_ms))
        .after_connect(move |conn, _| Box::pin(async move { prepare(conn, dialect).await }))
        .connect_with(options)
        .await?;
    Ok(pool)
}

impl Sqlite {
    pub(crate) async fn open(url: &str, s: &SqlxSettings) -> Result<(Self, Box<dyn Conn>), StoreError> {
        let pool = pool(&sqlite_url(url), Dialect::Sqlite, s).await?;
        let mut setup = pool.acquire().await?;
        // The writer opens the very file the pool did, however the URL named it.
        let path: String = sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&mut *setup)
            .await?;
        if path.is_empty() {
            return Err(StoreError::Config(
                "the SQLite store needs a file: an in-memory database has no writer".into(),
            ));
        }
        let writer = super::sqlite_writer::spawn(&path, s.batch_max, s.queue_max)?;
        // Migrations run on a connection of their own, before the writer takes any job.
        Ok((Self { pool, writer }, Box::new(SqlxConn::new(setup, Dialect::Sqlite))))
    }
}

impl Postgres {
    pub(crate) async fn open(url: &str, s: &SqlxSettings) -> Result<(Self, Box<dyn Conn>), StoreError> {
        let pool = pool(url, Dialect::Postgres, s).await?;
        let setup = Box::new(SqlxConn::new(pool.acquire().await?, Dialect::Postgres));
        Ok((Self { pool, conflict_retries_max: s.conflict_retries_max }, setup))
    }
}

#[async_trait]
impl Backend for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn reader(&self) -> Result<Box<dyn Conn>, StoreError> {
        Ok(Box::new(SqlxConn::new(self.pool.acquire().await?, Dialect::Sqlite)))
    }

    async fn write(&self, job: Job) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.try_send((job, reply)).map_err(|e| match e {
            // A full queue is back-pressure: say "try again" rather than queue without bound.
            mpsc::error::TrySendError::Full(_) => StoreError::transient("the SQLite writer's queue is full"),
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Backend for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn reader(&self) -> Result<Box<dyn Conn>, StoreError> {
        Ok(Box::new(SqlxConn::new(self.pool.acquire().await?, Dialect::Postgres)))
    }

    async fn write(&self, job: Job) -> Result<Done, StoreError> {
        let pool = self.pool.clone();
        let retries_max = self.conflict_retries_max;
        // Spawned, so that a client hanging up cannot cancel a write halfway and strand its idempotency claim.
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let mut conn = SqlxConn::new(pool.acquire().await?, Dialect::Postgres);
                match job.run(&mut conn).await {
                    Err(StoreError::Conflict(_)) if attempt < retries_max => {
                        metrics::counter!("stockroom_store_conflict_retries_total", "backend" => "postgres")
                            .increment(1);
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}
