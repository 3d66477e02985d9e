//! Commands: what the webhooks function (and anyone else) asks stock-updates to do. Each is a CloudEvent
//! `type` and a JSON `data` shape. Quantities are whole units; ids that can exceed 2^53 are strings.

use serde::{Deserialize, Serialize};

pub const ADJUST: &str = "dev.stockroom.command.adjust.v1";
pub const HOLD: &str = "dev.stockroom.command.hold.v1";
pub const COMMIT: &str = "dev.stockroom.command.commit.v1";
pub const FULFIL: &str = "dev.stockroom.command.fulfil.v1";
pub const RELEASE: &str = "dev.stockroom.command.release.v1";
/// A sale without a prior hold (a Shopify order): hold and commit in one step.
pub const SELL: &str = "dev.stockroom.command.sell.v1";
/// An external system's count of one row (Shopify's `inventory_levels/update`).
pub const SET_FROM_EXTERNAL: &str = "dev.stockroom.command.set-from-external.v1";

/// Every command type, for routing and for the catalogue test.
pub const ALL: &[&str] = &[ADJUST, HOLD, COMMIT, FULFIL, RELEASE, SELL, SET_FROM_EXTERNAL];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub sku: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<i64>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_on_hand: Option<i64>,
}

/// `dev.stockroom.command.adjust.v1`: an atomic batch of changes, as `POST /v1/adjustments` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// `dev.stockroom.command.hold.v1` and `…sell.v1`: the reservation id is required, so that redelivery and
/// the later commit, fulfil or release find the same reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub reservation_id: String,
    pub lines: Vec<Line>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitLine {
    pub sku: String,
    pub quantity: i64,
}

/// `dev.stockroom.command.commit.v1`: sell what is held (or `lines` of it; the rest is released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    pub reservation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<CommitLine>>,
}

/// `dev.stockroom.command.fulfil.v1` and `…release.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationRef {
    pub reservation_id: String,
}

/// `dev.stockroom.command.set-from-external.v1`: on_hand at one location as another system counted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFromExternal {
    pub sku: String,
    pub location: String,
    pub on_hand: i64,
    /// Who counted: `shopify`.
    pub system: String,
    /// The external system's own time of the count (RFC 3339).
    pub observed_at: String,
    /// The external ids involved, as strings (they can exceed 2^53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}
