//! Spanner's PostgreSQL dialect, over its REST API ([`rest`]).
//!
//! Sessions are pooled. Reads outside a write are strong, and a request's reads share one snapshot (see
//! [`conn`]). A write job runs in read-write
//! transactions begun inline with their first statement; when Spanner aborts one (it lost a lock conflict, or
//! the emulator was busy with another), the whole job runs again after a jittered, growing pause, at most
//! `abort_retries_max` times; then the request is answered 503 with `Retry-After`, and its idempotency claim
//! is given back so that the retry is free to go. Nothing reports success before `Commit` returned.
//!
//! Google's emulator runs one read-write transaction or schema change at a time (across all its databases): when
//! two meet, it aborts one of them at once (the newcomer, or sometimes the older one), where real Spanner would
//! make one wait for its locks. Against an emulator, the
//! store therefore takes turns itself ([`Gate`]): write jobs and schema changes pass one at a time, in this
//! process and across the Stockroom processes of the machine. What is left is what the retries are for: a
//! transaction of a process killed mid-write, which the emulator keeps open for about ten seconds, and
//! clients on other machines.

mod conn;
mod rest;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Backend;
use crate::error::StoreError;
use crate::sql::{Conn, Dialect};
use crate::store::{Done, Job};

pub(crate) use conn::SpannerConn;
pub(crate) use rest::Client;

/// Google's Spanner endpoint.
pub const SPANNER_ENDPOINT: &str = "https://spanner.googleapis.com";
/// Sessions created per request when the pool grows.
const SESSIONS_PER_CREATE: usize = 4;
/// Pause before the first re-run of an aborted job; it doubles up to [`RETRY_PAUSE_MAX`], with full jitter.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// How the store reaches Spanner.
#[derive(Debug, Clone)]
pub struct SpannerSettings {
    /// `http://host:port` of an emulator's REST gateway: no auth, the instance and database made if missing,
    /// and this process's transactions taken one at a time. `None`: Google, with metadata-server tokens.
    pub emulator: Option<String>,
    /// Times a job whose transaction Spanner aborted is run again before the request is answered 503.
    pub abort_retries_max: u32,
    /// Longest a single REST call may take.
    pub request_timeout_ms: u64,
}

impl Default for SpannerSettings {
    fn default() -> Self {
        Self { emulator: None, abort_retries_max: 12, request_timeout_ms: 30_000 }
    }
}

/// `spanner://projects/P/instances/I/databases/D` → `projects/P/instances/I/databases/D`.
pub(crate) fn database_of(url: &str) -> Result<String, StoreError> {
    let path = url.strip_prefix("spanner://").unwrap_or_default().trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    let well_formed = parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "instances"
        && parts[4] == "databases"
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
    if well_formed {
        Ok(path.to_owned())
    } else {
        Err(StoreError::Config(format!(
            "a Spanner database URL is spanner://projects/PROJECT/instances/INSTANCE/databases/DATABASE, not {url:?}"
        )))
    }
}

/// Sessions kept for reuse, at most `max` in use at once.
pub(crate) struct Sessions {
    client: Arc<Client>,
    free: Mutex<Vec<String>>,
    slots: Arc<Semaphore>,
    acquire_timeout: Duration,
}

/// A session lent from the pool; back to it when dropped.
pub(crate) struct Session {
    name: String,
    pool: Arc<Sessions>,
    _slot: OwnedSemaphorePermit,
    /// Spanner no longer knows it: do not lend it again.
    broken: bool,
}

impl Session {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn forget(&mut self) {
        self.broken = true;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.broken
            && let Ok(mut free) = self.pool.free.lock()
        {
            free.push(std::mem::take(&mut self.name));
        }
    }
}

impl Sessions {
    async fn lend(self: &Arc<Self>) -> Result<Session, StoreError> {
        let slot = tokio::time::timeout(self.acquire_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::transient("spanner: every session is in use"))?
            .map_err(|_| StoreError::Closed)?;
        let pooled = self.free.lock().ok().and_then(|mut free| free.pop());
        let name = match pooled {
            Some(name) => name,
            None => {
                let mut made = self.client.create_sessions(SESSIONS_PER_CREATE).await?;
                let name = made.pop().ok_or_else(|| StoreError::transient("spanner: no session was created"))?;
                if let Ok(mut free) = self.free.lock() {
                    free.extend(made);
                }
                name
            }
        };
        Ok(Session { name, pool: self.clone(), _slot: slot, broken: false })
    }
}

/// The emulator's one-at-a-time rule, kept on this machine: a turn is this process's one permit, then an
/// exclusive lock on a file named after the emulator, which every Stockroom process on the machine takes
/// (released by the OS when a holder dies). Real Spanner makes a conflicting transaction wait for its locks;
/// the emulator aborts it at once, and under steady load one process would starve the others of turns.
pub(crate) struct Gate {
    local: Arc<Semaphore>,
    file: std::path::PathBuf,
}

/// A turn at the emulator, held until dropped.
pub(crate) struct Turn {
    _local: OwnedSemaphorePermit,
    _file: std::fs::File,
}

impl Gate {
    /// The gate of the emulator at `endpoint`: one per endpoint, shared by every store in the process.
    fn of(endpoint: &str) -> Arc<Gate> {
        type Gates = Mutex<Vec<(String, Arc<Gate>)>>;
        static GATES: OnceLock<Gates> = OnceLock::new();
        let name: String = endpoint.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let make = || {
            Arc::new(Gate {
                local: Arc::new(Semaphore::new(1)),
                file: std::env::temp_dir().join(format!("stockroom-spanner-emulator-{name}.lock")),
            })
        };
        let Ok(mut gates) = GATES.get_or_init(Mutex::default).lock() else {
            return make();
        };
        if let Some((_, gate)) = gates.iter().find(|(e, _)| e == endpoint) {
            return gate.clone();
        }
        let gate = make();
        gates.push((endpoint.to_owned(), gate.clone()));
        gate
    }

    pub(crate) async fn turn(&self) -> Result<Turn, StoreError> {
        let local = self.local.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let path = self.file.clone();
        // One waiter per process blocks on the file (the others wait for the permit), on a blocking thread.
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|_| StoreError::Closed)?
        .map_err(|e| StoreError::transient(format!("spanner emulator gate: {e}")))?;
        Ok(Turn { _local: local, _file: file })
    }
}

/// A pause before re-running an aborted job: exponential from [`RETRY_PAUSE_FIRST`], capped, with full jitter
/// so that jobs that collided do not collide again in step.
fn retry_pause(attempt: u32) -> Duration {
    let cap = RETRY_PAUSE_FIRST.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(RETRY_PAUSE_MAX);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    cap.mul_f64(f64::from(nanos % 1_000 + 1) / 1_000.0)
}

pub(crate) struct Spanner {
    client: Arc<Client>,
    sessions: Arc<Sessions>,
    gate: Option<Arc<Gate>>,
    abort_retries_max: u32,
}

impl Spanner {
    /// Reaches the database (made first, on an emulator) and hands back a connection for migrations.
    pub(crate) async fn open(
        url: &str,
        settings: &SpannerSettings,
        pool_max: u32,
        acquire_timeout_ms: u64,
    ) -> Result<(Arc<Self>, Box<dyn Conn>), StoreError> {
        let database = database_of(url)?;
        let endpoint = settings.emulator.clone().unwrap_or_else(|| SPANNER_ENDPOINT.to_owned());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool_max as usize)
            .build()
            .map_err(|e| StoreError::Config(format!("spanner: an HTTP client: {e}")))?;
        let api = stockroom_google::Api::new(http, &endpoint, settings.request_timeout_ms);
        let client = Arc::new(Client::new(api, database));
        let gate = settings.emulator.as_deref().map(Gate::of);
        if settings.emulator.is_some() {
            client.create_on_emulator().await?;
        }
        let sessions = Arc::new(Sessions {
            client: client.clone(),
            free: Mutex::default(),
            slots: Arc::new(Semaphore::new(pool_max.max(1) as usize)),
            acquire_timeout: Duration::from_millis(acquire_timeout_ms),
        });
        let this = Arc::new(Self { client, sessions, gate, abort_retries_max: settings.abort_retries_max });
        let setup = Box::new(this.conn().await?);
        Ok((this, setup))
    }

    async fn conn(&self) -> Result<SpannerConn, StoreError> {
        Ok(SpannerConn::new(self.client.clone(), self.sessions.lend().await?, self.gate.clone()))
    }

    /// A connection for a write job. On an emulator the job's turn is taken first, before a session: jobs
    /// waiting for their turn hold no session, and a job keeps its turn from its first transaction to its
    /// last, so that no other job of this process slips in between two of them.
    async fn writer(&self) -> Result<SpannerConn, StoreError> {
        let turn = match &self.gate {
            Some(gate) => Some(gate.turn().await?),
            None => None,
        };
        Ok(SpannerConn::new(self.client.clone(), self.sessions.lend().await?, self.gate.clone()).holding(turn))
    }

    /// Drops the database: for tests, which make one each.
    pub(crate) async fn drop_database(&self) -> Result<(), StoreError> {
        self.client.drop_database().await
    }
}

#[async_trait]
impl Backend for Arc<Spanner> {
    fn dialect(&self) -> Dialect {
        Dialect::Spanner
    }

    async fn reader(&self) -> Result<Box<dyn Conn>, StoreError> {
        Ok(Box::new(self.conn().await?))
    }

    async fn write(&self, job: Job) -> Result<Done, StoreError> {
        let this = self.clone();
        // Spawned, so that a client hanging up cannot cancel a write between its statements and its commit.
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let mut conn = this.writer().await?;
                match job.run(&mut conn).await {
                    Err(StoreError::Conflict(e)) if attempt < this.abort_retries_max => {
                        conn.abandon().await;
                        drop(conn);
                        metrics::counter!("stockroom_store_conflict_retries_total", "backend" => "spanner")
                            .increment(1);
                        tracing::debug!(attempt, error = %e, "spanner aborted the transaction; running it again");
                        tokio::time::sleep(retry_pause(attempt)).await;
                        attempt += 1;
                    }
                    Err(StoreError::Conflict(e)) => {
                        metrics::counter!("stockroom_store_conflicts_unresolved_total", "backend" => "spanner")
                            .increment(1);
                        tracing::warn!(attempts = attempt + 1, error = %e, "spanner kept aborting the transaction");
                        return Err(StoreError::Conflict(e));
                    }
                    other => return other,
                }
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_names_project_instance_and_database() {
        assert_eq!(
            database_of("spanner://projects/p/instances/i/databases/d").unwrap(),
            "projects/p/instances/i/databases/d"
        );
        for bad in
            ["spanner://projects/p/instances/i", "spanner://p/i/d", "spanner://projects/p/instances/i/databases/"]
        {
            assert!(matches!(database_of(bad), Err(StoreError::Config(_))), "{bad}");
        }
    }

    #[test]
    fn retry_pauses_grow_and_stay_bounded() {
        for attempt in 0..30 {
            let cap = RETRY_PAUSE_FIRST.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(RETRY_PAUSE_MAX);
            let pause = retry_pause(attempt);
            assert!(pause > Duration::ZERO && pause <= cap, "{attempt}: {pause:?}");
        }
    }
}
