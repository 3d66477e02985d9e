//! Whole-unit quantities. Never floats; bounded so that sums of many of them cannot overflow `i64`.

use serde::{Deserialize, Serialize};

/// The largest quantity one line, hold or adjustment may carry: a trillion units. Far above any real shop,
/// and low enough that a million of them still fit in an `i64`.
pub const QUANTITY_MAX: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be between {min} and {QUANTITY_MAX}; got {got}")]
pub struct InvalidQuantity {
    pub what: &'static str,
    pub min: i64,
    pub got: i64,
}

/// A strictly positive number of units, at most [`QUANTITY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_i64)]
pub struct Quantity(i64);

impl Quantity {
    pub fn new(units: i64) -> Result<Self, InvalidQuantity> {
        if (1..=QUANTITY_MAX).contains(&units) {
            Ok(Self(units))
        } else {
            Err(InvalidQuantity { what: "quantity", min: 1, got: units })
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = InvalidQuantity;
    fn try_from(units: i64) -> Result<Self, InvalidQuantity> {
        Self::new(units)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        q.0
    }
}

/// Checks a signed change (`delta`): non-zero and at most [`QUANTITY_MAX`] either way.
pub fn check_delta(delta: i64) -> Result<i64, InvalidQuantity> {
    if delta != 0 && delta.unsigned_abs() <= QUANTITY_MAX as u64 {
        Ok(delta)
    } else {
        Err(InvalidQuantity { what: "delta", min: -QUANTITY_MAX, got: delta })
    }
}

/// Checks an absolute level (`set`, `expected_on_hand`, `safety_stock`): zero up to [`QUANTITY_MAX`].
pub fn check_level(what: &'static str, units: i64) -> Result<i64, InvalidQuantity> {
    if (0..=QUANTITY_MAX).contains(&units) { Ok(units) } else { Err(InvalidQuantity { what, min: 0, got: units }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_negative_and_huge_quantities_are_refused() {
        for bad in [0, -1, i64::MIN, QUANTITY_MAX + 1, i64::MAX] {
            assert!(Quantity::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Quantity::new(QUANTITY_MAX).map(Quantity::get), Ok(QUANTITY_MAX));
    }

    #[test]
    fn deltas_must_move_something_within_bounds() {
        assert!(check_delta(0).is_err());
        assert!(check_delta(i64::MIN).is_err());
        assert_eq!(check_delta(-5), Ok(-5));
    }

    #[test]
    fn levels_cannot_be_negative() {
        assert!(check_level("set", -1).is_err());
        assert_eq!(check_level("set", 0), Ok(0));
    }
}
