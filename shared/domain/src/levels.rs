//! Stock levels of one SKU at one location.

use serde::{Deserialize, Serialize};

use crate::movement::Deltas;
use crate::refusal::Refusal;

/// What the ledger keeps per (sku, location). `safety_stock` comes from the SKU's policy, not from movements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Levels {
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub safety_stock: i64,
}

impl Levels {
    /// What can still be promised: `on_hand - reserved - committed - safety_stock`. May be negative when a count
    /// found less than was promised, or safety stock was raised.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved - self.committed - self.safety_stock
    }

    /// The levels after a movement, or `QuantityOverflow` when a figure would leave `i64`.
    pub fn apply(&self, d: &Deltas) -> Result<Levels, Refusal> {
        let add = |a: i64, b: i64| a.checked_add(b).ok_or(Refusal::QuantityOverflow);
        Ok(Levels {
            on_hand: add(self.on_hand, d.on_hand)?,
            reserved: add(self.reserved, d.reserved)?,
            committed: add(self.committed, d.committed)?,
            safety_stock: self.safety_stock,
        })
    }

    /// Sums figures across locations; saturating, since a total is for display only.
    pub fn plus(&self, other: &Levels) -> Levels {
        Levels {
            on_hand: self.on_hand.saturating_add(other.on_hand),
            reserved: self.reserved.saturating_add(other.reserved),
            committed: self.committed.saturating_add(other.committed),
            safety_stock: self.safety_stock.saturating_add(other.safety_stock),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_subtracts_everything_promised_and_kept_back() {
        let l = Levels { on_hand: 10, reserved: 3, committed: 2, safety_stock: 1 };
        assert_eq!(l.available(), 4);
    }

    #[test]
    fn applying_a_movement_that_overflows_is_refused() {
        let l = Levels { on_hand: i64::MAX, ..Levels::default() };
        let d = Deltas { on_hand: 1, ..Deltas::default() };
        assert_eq!(l.apply(&d), Err(Refusal::QuantityOverflow));
    }
}
