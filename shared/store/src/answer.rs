//! The answer to a command, as stored for idempotent replays and as sent over HTTP.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stockroom_domain::{Refusal, ReservationId};

use crate::model::{ReservationView, StockFigures};
use stockroom_domain::{Location, Sku};

/// A status and a JSON body. Stored byte for byte under the idempotency key, so a retry answers as the first
/// attempt did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// True when this answer was replayed from the idempotency record rather than computed now.
    #[serde(skip)]
    pub replayed: bool,
}

/// The one shape of every error body: `{"error": code, "message": ..., ...details}`.
pub fn error_body(code: &str, message: &str, details: Value) -> Value {
    let mut body = json!({ "error": code, "message": message });
    if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), details) {
        map.extend(extra);
    }
    body
}

impl Answer {
    pub fn new(status: u16, body: Value) -> Self {
        Self { status, body, replayed: false }
    }

    pub fn error(status: u16, code: &str, message: impl Into<String>, details: Value) -> Self {
        Self::new(status, error_body(code, &message.into(), details))
    }

    pub fn refusal(r: &Refusal) -> Self {
        let details = match r {
            Refusal::InsufficientStock { shortfalls } => json!({ "shortfalls": shortfalls }),
            Refusal::OnHandMismatch { sku, location, expected, actual } => {
                json!({ "sku": sku, "location": location, "expected_on_hand": expected, "actual_on_hand": actual })
            }
            Refusal::NegativeOnHand { sku, location, would_be } => {
                json!({ "sku": sku, "location": location, "would_be": would_be })
            }
            Refusal::UnknownLocation { location } => json!({ "location": location }),
            Refusal::ReservationExpired { reservation_id } => json!({ "reservation_id": reservation_id }),
            Refusal::InvalidState { reservation_id, status, action } => {
                json!({ "reservation_id": reservation_id, "status": status, "action": action })
            }
            Refusal::LineNotInReservation { sku } | Refusal::DuplicateLine { sku } => json!({ "sku": sku }),
            Refusal::CommitExceedsHeld { sku, held, requested } => {
                json!({ "sku": sku, "held": held, "requested": requested })
            }
            Refusal::QuantityOverflow => json!({}),
        };
        Self::error(r.status(), r.code(), r.to_string(), details)
    }

    pub fn unknown_reservation(id: &ReservationId) -> Self {
        Self::error(404, "unknown_reservation", format!("no reservation {id}"), json!({ "reservation_id": id }))
    }

    pub fn reservation_exists(id: &ReservationId) -> Self {
        Self::error(
            409,
            "reservation_exists",
            format!("reservation {id} already exists with another request"),
            json!({ "reservation_id": id }),
        )
    }

    pub fn idempotency_mismatch() -> Self {
        Self::error(422, "idempotency_mismatch", "this idempotency key was used with a different request", json!({}))
    }

    pub fn idempotency_in_progress() -> Self {
        Self::error(409, "idempotency_in_progress", "a request with this idempotency key is still running", json!({}))
    }

    pub fn levels(rows: &[(Sku, Location, StockFigures)]) -> Self {
        let levels: Vec<Value> = rows
            .iter()
            .map(|(sku, location, f)| {
                json!({ "sku": sku, "location": location, "on_hand": f.on_hand, "reserved": f.reserved,
                        "committed": f.committed, "safety_stock": f.safety_stock, "available": f.available })
            })
            .collect();
        Self::new(200, json!({ "levels": levels }))
    }

    pub fn reservation(status: u16, view: &ReservationView) -> Self {
        Self::new(status, serde_json::to_value(view).unwrap_or(Value::Null))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How a replay is sent: the first answer's body, and 200 where the first was 201 (nothing was created now).
    pub fn replay(mut self) -> Self {
        if self.status == 201 {
            self.status = 200;
        }
        self.replayed = true;
        self
    }
}
