use thiserror::Error;

/// A store failure. Refusals are not errors: they are answers. What is left is either worth retrying
/// (the database is away, busy or deadlocked: 503 so the sender retries) or a bug (500).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the store is unavailable right now")]
    Transient(#[source] sqlx::Error),
    #[error("store failure")]
    Internal(#[source] sqlx::Error),
    #[error("the store holds a value it cannot read: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("{0}")]
    Config(String),
    /// The command came before something it depends on (a commit before its hold): deliver it again later.
    #[error("{0}")]
    NotYet(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Closed | Self::NotYet(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) { Self::Transient(e) } else { Self::Internal(e) }
    }
}

/// Connection trouble, pool exhaustion, lock conflicts and deadlocks go away by themselves; the rest do not.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback (serialization, deadlock),
            // 53 resources, 57 operator intervention (shutdown), 55P03 lock not available.
            // SQLite primary codes: 5 BUSY, 6 LOCKED (extended codes keep the low byte).
            code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "55P03"
                || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    }
}

/// Deadlocks and serialization failures: the store may run the same command again, a bounded number of times.
pub(crate) fn is_retryable_conflict(e: &StoreError) -> bool {
    match e {
        StoreError::Transient(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001") | Some("40P01"))
        }
        _ => false,
    }
}
