//! Named refusals: every way the ledger says no to a well-formed request. How a refusal is told over HTTP (its
//! status) is the edge's business; its code and message are the ledger's.

use serde::Serialize;

use crate::names::{Location, ReservationId, Sku};
use crate::reservation::ReservationStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shortfall {
    pub sku: Sku,
    pub requested: i64,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not enough stock for {} line(s)", shortfalls.len())]
    InsufficientStock { shortfalls: Vec<Shortfall> },
    #[error("on_hand of {sku} at {location} is {actual}, not the expected {expected}")]
    OnHandMismatch { sku: Sku, location: Location, expected: i64, actual: i64 },
    #[error("on_hand of {sku} at {location} would become {would_be}")]
    NegativeOnHand { sku: Sku, location: Location, would_be: i64 },
    #[error("location {location} does not exist; create it with PUT /v1/locations/{location}")]
    UnknownLocation { location: Location },
    #[error("reservation {reservation_id} expired")]
    ReservationExpired { reservation_id: ReservationId },
    #[error("reservation {reservation_id} is {status}; cannot {action}")]
    InvalidState { reservation_id: ReservationId, status: ReservationStatus, action: &'static str },
    #[error("sku {sku} is not held by this reservation")]
    LineNotInReservation { sku: Sku },
    #[error("cannot commit {requested} of {sku}: {held} held")]
    CommitExceedsHeld { sku: Sku, held: i64, requested: i64 },
    #[error("sku {sku} appears more than once")]
    DuplicateLine { sku: Sku },
    #[error("a figure would leave the range of whole units")]
    QuantityOverflow,
    #[error("no reservation {reservation_id}")]
    UnknownReservation { reservation_id: ReservationId },
    #[error("reservation {reservation_id} already exists with another request")]
    ReservationExists { reservation_id: ReservationId },
}

impl Refusal {
    /// The snake_case code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InsufficientStock { .. } => "insufficient_stock",
            Self::OnHandMismatch { .. } => "on_hand_mismatch",
            Self::NegativeOnHand { .. } => "negative_on_hand",
            Self::UnknownLocation { .. } => "unknown_location",
            Self::ReservationExpired { .. } => "reservation_expired",
            Self::InvalidState { .. } => "invalid_state",
            Self::LineNotInReservation { .. } => "line_not_in_reservation",
            Self::CommitExceedsHeld { .. } => "commit_exceeds_held",
            Self::DuplicateLine { .. } => "duplicate_line",
            Self::QuantityOverflow => "quantity_overflow",
            Self::UnknownReservation { .. } => "unknown_reservation",
            Self::ReservationExists { .. } => "reservation_exists",
        }
    }
}
