//! What the store's commands come to, typed: done (with what changed), refused (with the ledger's reason), the
//! earlier answer replayed, or the key busy or misused. The edge renders an outcome into the status and body a
//! client sees (`stockroom_runtime::http`); the store keeps that rendering under the idempotency key, so that a
//! retry answers byte for byte as the first attempt did.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stockroom_domain::{Location, Refusal, Sku};

use crate::model::{ReservationView, StockFigures};

/// What a command came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied.
    Done(Effect),
    /// The ledger's rules said no; nothing changed.
    Refused(Refusal),
    /// The same key and request were answered before: that answer, as it was rendered then.
    Replayed(Answer),
    /// Another attempt under the same key is running (or died less than a lease ago).
    InProgress,
    /// The key was used before with another request.
    Mismatch,
}

/// What an applied command changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An adjustment or an external count: each touched row's figures after it. `stale` (external counts only):
    /// the count was older than one already applied, and was ignored.
    Levels { rows: Vec<LevelRow>, stale: Option<bool> },
    /// A hold placed (`created`), or a reservation moved on (committed, fulfilled, released, expired).
    Reservation { view: ReservationView, created: bool },
    /// The expiry job booked this many lapsed holds.
    Expired { count: u64 },
}

/// One row's figures after an adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LevelRow {
    pub sku: Sku,
    pub location: Location,
    #[serde(flatten)]
    pub figures: StockFigures,
}

/// An outcome as a client sees it: a status and a JSON body. Stored under the idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// How outcomes are rendered into answers: the edge's one mapping, handed to the store so that what it stores
/// is what the client was told.
pub type Render = fn(&Outcome) -> Answer;
