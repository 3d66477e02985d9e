//! Turning request fields into domain values, each failure a 422 with its own code. Quantities arrive as
//! JSON numbers and are checked here, so that `1e30`, `1.5` or `2^63` is "invalid_quantity", not a parse error.

use serde_json::Number;
use stockroom_domain::quantity::{check_delta, check_level};
use stockroom_domain::{Location, Quantity, ReservationId, Sku};

use crate::error::ApiError;

pub fn sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|e| ApiError::invalid("invalid_sku", e.to_string()))
}

pub fn location(raw: &str) -> Result<Location, ApiError> {
    Location::parse(raw).map_err(|e| ApiError::invalid("invalid_location", e.to_string()))
}

pub fn reservation_id(raw: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse(raw).map_err(|e| ApiError::invalid("invalid_reservation_id", e.to_string()))
}

fn whole(n: &Number, field: &str) -> Result<i64, ApiError> {
    n.as_i64().ok_or_else(|| {
        ApiError::invalid("invalid_quantity", format!("{field} must be a whole number that fits in 64 bits; got {n}"))
    })
}

/// A strictly positive quantity.
pub fn quantity(n: &Number, field: &str) -> Result<Quantity, ApiError> {
    Quantity::new(whole(n, field)?).map_err(|e| ApiError::invalid("invalid_quantity", format!("{field}: {e}")))
}

/// A non-zero signed change.
pub fn delta(n: &Number) -> Result<i64, ApiError> {
    check_delta(whole(n, "delta")?).map_err(|e| ApiError::invalid("invalid_quantity", e.to_string()))
}

/// A level: zero or more.
pub fn level(n: &Number, field: &'static str) -> Result<i64, ApiError> {
    check_level(field, whole(n, field)?).map_err(|e| ApiError::invalid("invalid_quantity", e.to_string()))
}

/// Free text with a bound (reasons, references, names).
pub fn text(raw: &str, field: &str, bytes_max: usize) -> Result<String, ApiError> {
    if raw.trim().is_empty() || raw.len() > bytes_max {
        return Err(ApiError::invalid("invalid_text", format!("{field} must be 1 to {bytes_max} bytes of text")));
    }
    Ok(raw.to_owned())
}

/// Longest reason, reference or name accepted.
pub const TEXT_BYTES_MAX: usize = 256;
