//! Movements: the append-only ledger rows. Levels are a pure function of them (see [`replay`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::levels::Levels;
use crate::names::{Location, Sku};
use crate::refusal::Refusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Stock received, lost, counted or corrected by hand.
    Adjustment,
    /// A checkout's hold: reserved goes up.
    Hold,
    /// A sale: reserved becomes committed.
    Commit,
    /// Shipped: committed leaves on_hand.
    Fulfil,
    /// A hold or a sale given back.
    Release,
    /// A hold that ran past its expiry, booked.
    Expire,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adjustment => "adjustment",
            Self::Hold => "hold",
            Self::Commit => "commit",
            Self::Fulfil => "fulfil",
            Self::Release => "release",
            Self::Expire => "expire",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "adjustment" => Self::Adjustment,
            "hold" => Self::Hold,
            "commit" => Self::Commit,
            "fulfil" => Self::Fulfil,
            "release" => Self::Release,
            "expire" => Self::Expire,
            _ => return None,
        })
    }
}

/// How one movement changes the stored figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deltas {
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Movement {
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub sku: Sku,
    pub location: Location,
    pub kind: MovementKind,
    pub deltas: Deltas,
    /// Why: the adjustment's reason, or the reservation step.
    pub reason: String,
    /// The caller's reference (an order number, a delivery note).
    pub reference: Option<String>,
    /// What caused it: `reservation:<id>` or `adjustment:<idempotency key>`.
    pub cause: Option<String>,
}

/// Levels as the ledger says they are: every movement applied in order, from zero.
pub fn replay<'a>(
    movements: impl IntoIterator<Item = &'a Movement>,
) -> Result<BTreeMap<(Sku, Location), Levels>, Refusal> {
    let mut levels: BTreeMap<(Sku, Location), Levels> = BTreeMap::new();
    for m in movements {
        let entry = levels.entry((m.sku.clone(), m.location.clone())).or_default();
        *entry = entry.apply(&m.deltas)?;
    }
    Ok(levels)
}
