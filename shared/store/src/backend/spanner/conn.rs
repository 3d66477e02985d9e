//! A Spanner session as the rules use it. `begin` opens a read-write transaction lazily: the first statement
//! begins it inline (one round trip less), `commit` commits it, `rollback` rolls it back. Spanner has no
//! savepoints, so transactions do not nest; the rules never nest them on this backend (only SQLite's batching
//! writer does). Outside a read-write transaction, reads are strong: the first begins a read-only transaction
//! inline (as a single-use read would, in one round trip), and any further read of the same request reads the
//! same snapshot. A request that reads twice (levels, then policies) so sees one moment; and on the emulator,
//! where a strong read that starts a transaction waits about a third of a second, it waits once.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Client, Gate, Session, Turn};
use crate::error::StoreError;
use crate::sql::{Conn, Dialect, Query, Row};

/// Times a schema change that met a transaction is tried again (about a minute, with the pauses).
const DDL_CONFLICT_RETRIES_MAX: u32 = 35;

enum Tx {
    None,
    /// Reads outside a write: a strong read-only snapshot, begun by the first of them.
    ReadOnly(String),
    /// Begun; Spanner will start it with the first statement.
    Pending,
    Active(String),
}

pub(crate) struct SpannerConn {
    client: Arc<Client>,
    session: Session,
    tx: Tx,
    /// DML sequence numbers, increasing within a transaction (Spanner uses them to replay a request once).
    seqno: i64,
    /// The emulator's gate, when there is one; held from `begin` (or a schema change) until the end.
    gate: Option<Arc<Gate>>,
    turn: Option<Turn>,
    /// The turn was handed in for a whole job: kept across its transactions.
    turn_for_job: bool,
}

impl SpannerConn {
    pub(crate) fn new(client: Arc<Client>, session: Session, gate: Option<Arc<Gate>>) -> Self {
        Self { client, session, tx: Tx::None, seqno: 0, gate, turn: None, turn_for_job: false }
    }

    /// Holds `turn` (the emulator's gate) until dropped, across every transaction.
    pub(crate) fn holding(mut self, turn: Option<Turn>) -> Self {
        self.turn_for_job = turn.is_some();
        self.turn = turn;
        self
    }

    async fn take_turn(&mut self) -> Result<(), StoreError> {
        if let (Some(gate), None) = (&self.gate, &self.turn) {
            self.turn = Some(gate.turn().await?);
        }
        Ok(())
    }

    /// The transaction selector for the next statement.
    fn selector(&self) -> Value {
        match &self.tx {
            Tx::None => json!({ "begin": { "readOnly": { "strong": true } } }),
            Tx::Pending => json!({ "begin": { "readWrite": {} } }),
            Tx::ReadOnly(id) | Tx::Active(id) => json!({ "id": id }),
        }
    }

    fn started(&mut self, id: Option<String>) {
        match (&self.tx, id) {
            (Tx::Pending, Some(id)) => self.tx = Tx::Active(id),
            (Tx::None, Some(id)) => self.tx = Tx::ReadOnly(id),
            _ => {}
        }
    }

    /// In a read-write transaction (begun, or pending its first statement).
    fn writing(&self) -> bool {
        matches!(self.tx, Tx::Pending | Tx::Active(_))
    }

    fn next_seqno(&mut self) -> i64 {
        self.seqno += 1;
        self.seqno
    }

    fn ended(&mut self) {
        self.tx = Tx::None;
        if !self.turn_for_job {
            self.turn = None;
        }
    }

    /// A session Spanner forgot is not lent again.
    fn note(&mut self, e: StoreError) -> StoreError {
        if e.to_string().contains("Session") || format!("{e:?}").contains("Session not found") {
            self.session.forget();
        }
        e
    }

    /// One statement, in the open transaction if any (beginning it if it is pending).
    async fn statement(&mut self, q: Query) -> Result<super::rest::ResultSet, StoreError> {
        let seqno = self.next_seqno();
        let result = self.client.execute_sql(self.session.name(), self.selector(), seqno, &q).await;
        let set = result.map_err(|e| self.note(e))?;
        self.started(set.transaction.clone());
        Ok(set)
    }

    /// Rolls back whatever is open, and waits for it: before a job runs again, the emulator must have let the
    /// old transaction go.
    pub(crate) async fn abandon(&mut self) {
        if let Tx::Active(id) = std::mem::replace(&mut self.tx, Tx::None) {
            let _ = self.client.rollback(self.session.name(), &id).await;
        }
        self.ended();
    }
}

impl Drop for SpannerConn {
    /// A job that failed part way leaves its transaction open: roll it back in the background, so that its
    /// locks (and the emulator's one slot) are freed without waiting for Spanner to time it out.
    fn drop(&mut self) {
        if let Tx::Active(id) = std::mem::replace(&mut self.tx, Tx::None)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (client, session, turn) = (self.client.clone(), self.session.name().to_owned(), self.turn.take());
            runtime.spawn(async move {
                let _ = client.rollback(&session, &id).await;
                drop(turn);
            });
        }
    }
}

#[async_trait]
impl Conn for SpannerConn {
    fn dialect(&self) -> Dialect {
        Dialect::Spanner
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        if self.writing() {
            return Err(StoreError::internal("spanner has no savepoints: a transaction cannot nest"));
        }
        // A read-only snapshot needs no ending: it is simply left behind.
        self.take_turn().await?;
        self.tx = Tx::Pending;
        self.seqno = 0;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        let result = match std::mem::replace(&mut self.tx, Tx::None) {
            Tx::Active(id) => self.client.commit(self.session.name(), &id).await,
            Tx::Pending | Tx::None | Tx::ReadOnly(_) => Ok(()),
        };
        self.ended();
        result.map_err(|e| self.note(e))
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        let result = match std::mem::replace(&mut self.tx, Tx::None) {
            Tx::Active(id) => self.client.rollback(self.session.name(), &id).await,
            Tx::Pending | Tx::None | Tx::ReadOnly(_) => Ok(()),
        };
        self.ended();
        result.map_err(|e| self.note(e))
    }

    async fn execute(&mut self, q: Query) -> Result<u64, StoreError> {
        if !self.writing() {
            return Err(StoreError::internal("spanner: a write outside a transaction"));
        }
        Ok(self.statement(q).await?.changed)
    }

    async fn fetch_all(&mut self, q: Query) -> Result<Vec<Row>, StoreError> {
        Ok(self.statement(q).await?.rows.into_iter().map(Row::Spanner).collect())
    }

    async fn execute_all(&mut self, qs: Vec<Query>) -> Result<Vec<u64>, StoreError> {
        if qs.is_empty() {
            return Ok(Vec::new());
        }
        if !self.writing() {
            return Err(StoreError::internal("spanner: a write outside a transaction"));
        }
        let selector = self.selector();
        let seqno = self.next_seqno();
        let (transaction, result) = self.client.execute_batch_dml(self.session.name(), selector, seqno, &qs).await;
        self.started(transaction);
        result.map_err(|e| self.note(e))
    }

    /// Schema changes are operations, outside any transaction; on an emulator they take the gate's turn too,
    /// and are tried again while another process's transaction holds the emulator.
    async fn apply_ddl(&mut self, statements: Vec<String>) -> Result<(), StoreError> {
        let held = self.turn.is_some();
        self.take_turn().await?;
        let mut attempt = 0;
        let result = loop {
            match self.client.update_ddl(&statements).await {
                Err(StoreError::Conflict(e)) if attempt < DDL_CONFLICT_RETRIES_MAX => {
                    tracing::debug!(attempt, error = %e, "a schema change met a transaction; trying again");
                    tokio::time::sleep(super::retry_pause(attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        if !held {
            self.turn = None;
        }
        result
    }
}
