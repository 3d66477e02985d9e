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
