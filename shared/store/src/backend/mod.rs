//! What each database gives the rules: connections, and a discipline for writes. The rules themselves
//! ([`crate::sql`]) are the same on every backend.

pub(crate) mod spanner;
pub(crate) mod sqlite_writer;
pub(crate) mod sqlx;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::sql::{Conn, Dialect};
use crate::store::{Done, Job};

#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;
    /// A connection for reads outside any transaction.
    async fn reader(&self) -> Result<Box<dyn Conn>, StoreError>;
    /// Runs a write job to its end: the job opens and closes its own transactions. A backend may run a job
    /// again after it lost a conflict (every job is written to be run again from the start), and must not
    /// report success before the job's last commit returned.
    async fn write(&self, job: Job) -> Result<Done, StoreError>;
}
