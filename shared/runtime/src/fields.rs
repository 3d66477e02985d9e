//! Turning request fields into domain values, each failure a 422 with its own code. Quantities arrive as
//! JSON numbers and are checked here, so that `1e30`, `1.5` or `2^63` is "invalid_quantity", not a parse error.

use serde_json::Number;
use stockroom_domain::quantity::{check_delta, check_level};
use stockroom_domain::{HoldLine, HoldRequest, Location, Quantity, ReservationId, Sku, Ttl};

use crate::http::ApiError;

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

/// Lines in one hold at most (`POST /v1/reservations`, hold and sell commands).
pub const HOLD_LINES_MAX: usize = 100;

/// One line of a hold as it arrives, from the API or a command.
pub struct HoldLineInput<'a> {
    pub sku: &'a str,
    pub quantity: &'a Number,
    pub location: Option<&'a str>,
}

/// A hold as it arrives, checked into the domain's request: the same checks whichever path brings it.
pub fn hold_request(
    lines: &[HoldLineInput<'_>],
    ttl_seconds: Option<&Number>,
    reference: Option<&str>,
) -> Result<HoldRequest, ApiError> {
    if lines.is_empty() || lines.len() > HOLD_LINES_MAX {
        return Err(ApiError::invalid("invalid_lines", format!("send 1 to {HOLD_LINES_MAX} lines")));
    }
    let lines = lines
        .iter()
        .map(|l| {
            Ok(HoldLine {
                sku: sku(l.sku)?,
                quantity: quantity(l.quantity, "quantity")?,
                location: l.location.map(location).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let ttl = match ttl_seconds {
        None => Ttl::default(),
        Some(n) => n
            .as_i64()
            .ok_or_else(|| format!("ttl_seconds must be a whole number; got {n}"))
            .and_then(Ttl::seconds)
            .map_err(|m| ApiError::invalid("invalid_ttl", m))?,
    };
    let reference = reference.map(|r| text(r, "reference", TEXT_BYTES_MAX)).transpose()?;
    Ok(HoldRequest { lines, ttl, reference })
}
