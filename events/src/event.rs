//! Events out: CloudEvents 1.0 with JSON data on `inventory-events`, ordering key = sku, `id` = the movement id.

use serde::{Deserialize, Serialize};

pub const STOCK_CHANGED: &str = "dev.stockroom.stock.changed.v1";
pub const STOCK_LOW: &str = "dev.stockroom.stock.low.v1";
pub const STOCK_DEPLETED: &str = "dev.stockroom.stock.depleted.v1";
pub const STOCK_REPLENISHED: &str = "dev.stockroom.stock.replenished.v1";
pub const RESERVATION_HELD: &str = "dev.stockroom.reservation.held.v1";
pub const RESERVATION_COMMITTED: &str = "dev.stockroom.reservation.committed.v1";
pub const RESERVATION_FULFILLED: &str = "dev.stockroom.reservation.fulfilled.v1";
pub const RESERVATION_RELEASED: &str = "dev.stockroom.reservation.released.v1";
pub const RESERVATION_EXPIRED: &str = "dev.stockroom.reservation.expired.v1";
pub const RESERVATION_REFUSED: &str = "dev.stockroom.reservation.refused.v1";
pub const RECONCILIATION_COMPLETED: &str = "dev.stockroom.reconciliation.completed.v1";

/// Every event type, for subscribers and for the catalogue test.
pub const ALL: &[&str] = &[
    STOCK_CHANGED,
    STOCK_LOW,
    STOCK_DEPLETED,
    STOCK_REPLENISHED,
    RESERVATION_HELD,
    RESERVATION_COMMITTED,
    RESERVATION_FULFILLED,
    RESERVATION_RELEASED,
    RESERVATION_EXPIRED,
    RESERVATION_REFUSED,
    RECONCILIATION_COMPLETED,
];

/// Differences one `reconciliation.completed` event lists at most: a bound on the message (about 2 MB at this
/// size, well under Pub/Sub's 10 MB). A run that finds more must split them across several events.
pub const DIFFERENCES_MAX: usize = 10_000;

/// One ledger movement, as it appears in every movement event's `data.movement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Movement {
    pub id: String,
    pub at: String,
    pub sku: String,
    pub location: String,
    pub kind: String,
    pub deltas: Deltas,
    pub reason: String,
    pub reference: Option<String>,
    pub cause: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deltas {
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
}

/// The row's figures right after the movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub safety_stock: i64,
    pub available: i64,
}

/// `data` of `stock.changed` and every `reservation.{held,committed,fulfilled,released,expired}` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovementData {
    pub movement: Movement,
    pub levels: Levels,
}

/// `data` of `reservation.refused`: a command that was acknowledged but refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedData {
    /// The refused command's CloudEvent type and id.
    pub command_type: String,
    pub command_id: String,
    pub reservation_id: Option<String>,
    /// The error body the HTTP API would have answered: `{"error", "message", ...}`.
    pub error: serde_json::Value,
}

/// `data` of `stock.low`, `stock.depleted` and `stock.replenished`: a SKU's stock health crossed into the status
/// the type names (`low`, `depleted`, or `ok` for replenished), with the figures and thresholds that decided it,
/// as the contract's Analytics section derives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockThresholdData {
    pub sku: String,
    /// The location whose figures crossed; `None` when they are the SKU's total across every location.
    pub location: Option<String>,
    pub available: i64,
    /// Units sold in the trailing 7 days / 7.
    pub velocity_per_day: f64,
    /// `available / velocity_per_day`; `None` when nothing sold in the window.
    pub days_of_cover: Option<f64>,
    /// Now + `days_of_cover` (RFC 3339 UTC); `None` with it.
    pub projected_stockout_at: Option<String>,
    /// `low`, `depleted` or `ok`: the status now, fixed by the event type.
    pub status: String,
    /// The status it crossed from.
    pub previous_status: String,
    /// The thresholds in force: the SKU's policy with defaults applied.
    pub low_stock_days: i64,
    pub reorder_point: Option<i64>,
    /// The movement that crossed the line; `None` when time did (sales left the window) or a policy changed.
    pub movement_id: Option<String>,
}

/// `data` of `reconciliation.completed`: one run over a counts file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationData {
    /// Where the counts came from: a local path or `gs://bucket/object`.
    pub file: String,
    /// Data rows read (the header not included).
    pub rows: i64,
    /// True in `apply` mode: each difference was booked as one `cycle_count` movement.
    pub applied: bool,
    /// Every row whose count differs from the ledger, at most [`DIFFERENCES_MAX`].
    pub differences: Vec<Difference>,
}

/// One row of a counts file that disagrees with the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    pub sku: String,
    pub location: String,
    /// `on_hand` as counted.
    pub counted: i64,
    /// `on_hand` as the ledger has it at the moment of the count (holds and later movements taken into account).
    pub expected: i64,
    /// `counted - expected`; never zero.
    pub delta: i64,
    /// The row's `counted_at` (RFC 3339 UTC); `None` when the file has no such column and the run's time stands.
    pub counted_at: Option<String>,
    /// The `cycle_count` movement booked for it: set exactly when the run `applied`.
    pub movement_id: Option<String>,
}
