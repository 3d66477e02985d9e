//! What goes into the store and what comes out: commands, and the views the HTTP API shows.

use serde::Serialize;
use stockroom_domain::{
    Change, CommitLine, HoldRequest, Levels, Location, MovementKind, ReservationId, Sku, Timestamp,
};

/// A write to the ledger, already parsed and validated at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Adjust {
        changes: Vec<Change>,
        cause: String,
    },
    Hold {
        id: ReservationId,
        request: HoldRequest,
    },
    Commit {
        id: ReservationId,
        lines: Option<Vec<CommitLine>>,
    },
    Fulfil {
        id: ReservationId,
    },
    Release {
        id: ReservationId,
    },
    /// Books a lapsed hold as expired (the expiry job); does nothing to any other reservation.
    Expire {
        id: ReservationId,
    },
    /// A sale without a prior hold (a Shopify order): hold and commit in one transaction.
    Sell {
        id: ReservationId,
        request: HoldRequest,
    },
    /// Another system's count of one row. Applied as a `set` unless a newer count from the same system was
    /// applied already (reports arrive late and out of order).
    SetFromExternal {
        sku: Sku,
        location: Location,
        on_hand: i64,
        system: String,
        observed_at: Timestamp,
        reference: Option<String>,
    },
}

impl Command {
    /// The function whose events these are: `source` = `//stockroom/<origin>`.
    pub fn origin(&self) -> &'static str {
        match self {
            Self::Adjust { .. } | Self::SetFromExternal { .. } | Self::Sell { .. } => "stock-updates",
            _ => "reservations",
        }
    }
}

/// A command that arrived as an event (CloudEvent, Pub/Sub message, queued webhook command) rather than as an
/// API call. Such a command is acknowledged even when refused, so its refusal leaves as a
/// `reservation.refused` event; and a command whose predecessor has not arrived yet (a commit before its hold)
/// is answered "not yet" so that the sender delivers it again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub command_type: String,
    pub command_id: String,
}

/// A command waiting in the local, durable command queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCommand {
    pub id: String,
    pub ty: String,
    pub source: String,
    pub ordering_key: String,
    pub data: serde_json::Value,
    pub attempts: i64,
}

/// What became of a queued command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Done,
    RetryAfterMs(i64, String),
    Dead(String),
}

/// An outgoing CloudEvent waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: String,
    /// The ordering key.
    pub sku: String,
    pub event: serde_json::Value,
}

/// A counts file announced by Cloud Storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CountsFile {
    pub bucket: String,
    pub name: String,
    pub generation: String,
    pub size: Option<String>,
}

/// An idempotency key and the hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LocationRecord {
    pub location: Location,
    pub name: String,
    pub priority: i64,
}

/// The five figures, for one location or summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockFigures {
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub safety_stock: i64,
    pub available: i64,
}

impl From<Levels> for StockFigures {
    fn from(l: Levels) -> Self {
        Self {
            on_hand: l.on_hand,
            reserved: l.reserved,
            committed: l.committed,
            safety_stock: l.safety_stock,
            available: l.available(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockLocation {
    pub location: Location,
    #[serde(flatten)]
    pub figures: StockFigures,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockView {
    pub sku: Sku,
    pub locations: Vec<StockLocation>,
    pub total: StockFigures,
}

impl StockView {
    pub fn new(sku: Sku, rows: Vec<(Location, Levels)>) -> Self {
        let total = rows.iter().fold(Levels::default(), |acc, (_, l)| acc.plus(l));
        let locations = rows.into_iter().map(|(location, l)| StockLocation { location, figures: l.into() }).collect();
        Self { sku, locations, total: total.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AllocationView {
    pub location: Location,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReservationLineView {
    pub sku: Sku,
    pub quantity: i64,
    /// Units sold by the commit (0 until then).
    pub committed: i64,
    pub allocations: Vec<AllocationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReservationView {
    pub reservation_id: ReservationId,
    #[schema(value_type = String, example = "held")]
    pub status: stockroom_domain::ReservationStatus,
    pub reference: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    pub lines: Vec<ReservationLineView>,
}

impl ReservationView {
    pub fn of(r: &stockroom_domain::Reservation, now: Timestamp) -> Self {
        Self {
            reservation_id: r.id.clone(),
            status: r.status_at(now),
            reference: r.reference.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            lines: r
                .lines
                .iter()
                .map(|l| ReservationLineView {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    committed: l.allocations.iter().map(|a| a.committed).sum(),
                    allocations: l
                        .allocations
                        .iter()
                        .map(|a| AllocationView { location: a.location.clone(), quantity: a.quantity })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MovementFilter {
    pub sku: Option<Sku>,
    pub location: Option<Location>,
    /// Movements strictly after this id (the previous page's `next`).
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MovementRow {
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub sku: Sku,
    pub location: Location,
    #[schema(value_type = String, example = "hold")]
    pub kind: MovementKind,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub committed_delta: i64,
    pub reason: String,
    pub reference: Option<String>,
    pub cause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MovementPage {
    pub movements: Vec<MovementRow>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<String>,
}

/// A SKU's policy; `safety_stock` is kept back at every location of the SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Policy {
    pub sku: Sku,
    pub low_stock_days: Option<i64>,
    pub reorder_point: Option<i64>,
    pub safety_stock: i64,
}

/// Fields left out keep their current value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyUpdate {
    pub low_stock_days: Option<Option<i64>>,
    pub reorder_point: Option<Option<i64>>,
    pub safety_stock: Option<i64>,
}
