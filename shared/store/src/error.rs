use thiserror::Error;

/// A failure's cause, whatever the backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A store failure. Refusals are not errors: they are outcomes. What is left is either worth retrying (the
/// database is away, busy, or a transaction lost a conflict: 503 so the sender retries) or a bug (500).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database is away, busy or overloaded; trying again later may well succeed.
    #[error("the store is unavailable right now")]
    Transient(#[source] BoxError),
    /// A transaction lost to another (a deadlock, a serialization failure, Spanner's `ABORTED`): the store runs
    /// it again, a bounded number of times, before this reaches a caller as "unavailable".
    #[error("the transaction lost a conflict with another")]
    Conflict(#[source] BoxError),
    /// A row with this key exists already.
    #[error("a row with this key exists already")]
    Duplicate(#[source] BoxError),
    #[error("store failure")]
    Internal(#[source] BoxError),
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
        matches!(self, Self::Transient(_) | Self::Conflict(_) | Self::Closed | Self::NotYet(_))
    }

    /// A transient failure described in words (an HTTP API that did not answer, a queue that is full).
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient(reason.into().into())
    }

    /// A failure that retrying will not mend, described in words.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self::Internal(reason.into().into())
    }
}
