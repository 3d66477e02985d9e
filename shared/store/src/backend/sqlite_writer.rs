//! SQLite's one writer, on rusqlite, on a thread of its own.
//!
//! Every write job of the embedded store runs here, queued and applied in batches: one transaction per batch, a
//! savepoint per job, one fsync for all of them. Readers stay on sqlx's pool.
//!
//! Why not sqlx here, as everywhere else: sqlx's SQLite driver runs each connection on a worker thread and hands
//! every statement to it and its rows back over channels, so each statement costs two thread hand-offs. A hold is
//! a dozen statements, and on the hot SKU those hand-offs, not SQLite, were the writer's time (issue 10's
//! profile). Here the job's statements run on the thread that owns the connection: the rules' `Conn` calls
//! complete at once, statements are prepared once and cached, and a batch never leaves the thread until its
//! commit. rusqlite 0.39 links the same bundled SQLite as sqlx (libsqlite3-sys 0.37), so the process has one
//! SQLite and one set of file locks.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::sql::{Conn, Dialect, Param, Query, Row};
use crate::store::{Done, Job};

/// What the writer is sent: a job, and where its result goes once the batch holding it has committed.
pub(crate) type WriteRequest = (Job, oneshot::Sender<Result<Done, StoreError>>);

/// What all of SQLite (page caches, statements) may hold before it reuses memory instead of allocating more.
const SQLITE_MEMORY_SOFT_MAX: i64 = 24 * 1024 * 1024;

/// Distinct statements kept prepared, least recently used dropped first: the rules' hot statements are a few
/// dozen; multi-row inserts and `IN` lists add one per row count, rarely used again.
const STATEMENT_CACHE: usize = 128;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE: as sqlx's `is_unique_violation`.
                ErrorCode::ConstraintViolation if matches!(f.extended_code, 1555 | 2067) => Self::Duplicate(e.into()),
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Self::Transient(e.into()),
                _ => Self::Internal(e.into()),
            },
            _ => Self::Internal(e.into()),
        }
    }
}

/// Opens the writer's connection on the database file `path` and starts its thread; the queue that feeds it.
pub(crate) fn spawn(path: &str, batch_max: usize, queue_max: usize) -> Result<mpsc::Sender<WriteRequest>, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch(super::sqlx::SQLITE_PRAGMAS)?;
    // SQLite's page caches share one budget, the sum of every connection's `cache_size` (2 MB each: 34 MB with 16
    // readers), and the writer's grows into it as the database does; with its statements, a soak took 25 minutes
    // to reach the ceiling, which looked like a leak. A soft limit on all of SQLite's memory makes the ceiling
    // explicit and lower: past it, SQLite reuses cache pages instead of allocating. The OS caches the file anyway.
    conn.execute_batch(&format!("PRAGMA soft_heap_limit = {SQLITE_MEMORY_SOFT_MAX}"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let (tx, rx) = mpsc::channel(queue_max.max(1));
    let handle = Handle::current();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || write_loop(conn, rx, batch_max.max(1), &handle))
        .map_err(|e| StoreError::internal(format!("starting the SQLite writer: {e}")))?;
    Ok(tx)
}

/// Takes whatever is queued (up to `batch_max`), applies each job in its own savepoint inside one transaction,
/// commits once, and only then answers. Ends when every sender is gone.
fn write_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriteRequest>, batch_max: usize, handle: &Handle) {
    let mut batch = Vec::with_capacity(batch_max);
    while handle.block_on(rx.recv_many(&mut batch, batch_max)) > 0 {
        let mut results = Vec::with_capacity(batch.len());
        let committed = (|| {
            conn.execute_batch("BEGIN")?;
            for (job, _) in &batch {
                if conn.is_autocommit() {
                    // SQLite rolled the whole batch back by itself (an I/O error, a full disk): a job run now would
                    // commit statement by statement, outside it. Fail the batch instead.
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("the batch's transaction was rolled back".into()),
                    ));
                }
                let mut c = WriterConn { conn: &mut conn, depth: 1, opened: 0 };
                // The rules' calls on `c` complete at once; the runtime's handle only drives what else a job
                // awaits (nothing, today).
                results.push(handle.block_on(job.run(&mut c)));
            }
            conn.execute_batch("COMMIT")
        })();
        memory_gauges(&conn);
        match committed {
            Ok(()) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite batch commit failed");
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::transient(format!("the batch did not commit: {e}"))));
                }
            }
        }
    }
}

/// What SQLite holds in memory, for `/metrics`: in all (every connection's page cache and statements), and the
/// writer's page cache and prepared statements. Each connection's cache grows with the database up to
/// `cache_size` (2 MB), so these rise for a while and then stay.
fn memory_gauges(conn: &Connection) {
    let status = |op| {
        let (mut current, mut highest) = (0, 0);
        // SAFETY: the handle is this open connection's, used on the thread that owns it; `sqlite3_db_status` only
        // writes the two integers it is given.
        unsafe { rusqlite::ffi::sqlite3_db_status(conn.handle(), op, &mut current, &mut highest, 0) };
        f64::from(current)
    };
    // SAFETY: `sqlite3_memory_used` reads SQLite's own counter; it takes no arguments and is thread-safe.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    metrics::gauge!("stockroom_sqlite_memory_bytes").set(used as f64);
    metrics::gauge!("stockroom_sqlite_writer_cache_bytes").set(status(rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED));
    metrics::gauge!("stockroom_sqlite_writer_statements_bytes").set(status(rusqlite::ffi::SQLITE_DBSTATUS_STMT_USED));
}

/// The writer's connection as the rules use it, inside the batch's transaction: each `begin` is a savepoint.
struct WriterConn<'a> {
    /// `&mut`, not `&`: a rusqlite connection may move between threads but is not shared by them.
    conn: &'a mut Connection,
    /// Transactions open on the connection: the batch's, then this job's savepoints.
    depth: usize,
    /// Savepoints this job opened and has not closed; rolled back when it is dropped, so that a job that failed
    /// part way leaves nothing in the batch.
    opened: usize,
}

impl WriterConn<'_> {
    fn release(&mut self) {
        self.opened = self.opened.saturating_sub(1);
        self.depth -= 1;
    }

    /// Runs `q` and hands each row to `row`.
    fn run(
        &self,
        q: &Query,
        mut row: impl FnMut(&rusqlite::Row<'_>, usize) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut statement = self.conn.prepare_cached(&q.sql)?;
        // `$n` is a named parameter to SQLite, numbered by first appearance: bind each by its name.
        for i in 1..=statement.parameter_count() {
            let name = statement.parameter_name(i).unwrap_or_default();
            let n: usize = name.strip_prefix('$').and_then(|n| n.parse().ok()).unwrap_or(0);
            let value = q
                .params
                .get(n.wrapping_sub(1))
                .ok_or_else(|| StoreError::internal(format!("no value for parameter {name:?} of {:?}", q.sql)))?;
            match value {
                Param::Int(v) => statement.raw_bind_parameter(i, v)?,
                Param::Text(v) => statement.raw_bind_parameter(i, v)?,
            }
        }
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        while let Some(r) = rows.next()? {
            row(r, columns)?;
        }
        Ok(())
    }
}

impl Drop for WriterConn<'_> {
    fn drop(&mut self) {
        while self.opened > 0 {
            let _ = self.conn.execute_batch(&format!("ROLLBACK TO s{0}; RELEASE s{0}", self.depth));
            self.release();
        }
    }
}

#[async_trait]
impl Conn for WriterConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch(&format!("SAVEPOINT s{}", self.depth + 1))?;
        self.depth += 1;
        self.opened += 1;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        let released = self.conn.execute_batch(&format!("RELEASE s{}", self.depth));
        self.release();
        Ok(released?)
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        let rolled = self.conn.execute_batch(&format!("ROLLBACK TO s{0}; RELEASE s{0}", self.depth));
        self.release();
        Ok(rolled?)
    }

    async fn execute(&mut self, q: Query) -> Result<u64, StoreError> {
        self.run(&q, |_, _| Ok(()))?;
        Ok(self.conn.changes())
    }

    async fn fetch_all(&mut self, q: Query) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.run(&q, |r, columns| {
            let values = (0..columns).map(|i| r.get::<_, Value>(i)).collect::<Result<Vec<_>, _>>()?;
            out.push(Row::Sqlite(values));
            Ok(())
        })?;
        Ok(out)
    }

    async fn apply_ddl(&mut self, statements: Vec<String>) -> Result<(), StoreError> {
        for s in statements {
            self.conn.execute_batch(&s)?;
        }
        Ok(())
    }
}
