//! Stockroom's ledger rules.
//!
//! Everything here is pure and synchronous: no I/O, no clock, no random ids. The store loads state, calls into
//! this crate with `now` and an id source, and persists what comes back. That keeps every rule testable with
//! plain values and lets property tests drive long sequences of operations in microseconds.

pub mod analytics;
pub mod ledger;
pub mod levels;
pub mod movement;
pub mod names;
pub mod quantity;
pub mod refusal;
pub mod reservation;

pub use ledger::{Change, ChangeOp, HoldLine, HoldRequest, LapsedAllocation, StockBook, adjust, expire_lapsed, hold};
pub use levels::Levels;
pub use movement::{Deltas, Movement, MovementKind};
pub use names::{InvalidName, Location, ReservationId, Sku};
pub use quantity::{InvalidQuantity, QUANTITY_MAX, Quantity};
pub use refusal::{Refusal, Shortfall};
pub use reservation::{
    Allocation, AllocationState, CommitLine, Reservation, ReservationLine, ReservationStatus, TTL_SECONDS_DEFAULT,
    TTL_SECONDS_MAX, Ttl,
};

/// Time in the domain: always handed in, never read.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Where movement ids come from. The store passes UUIDv7s; tests pass counters.
pub trait IdSource {
    fn next_id(&mut self) -> String;
}

impl<F: FnMut() -> String> IdSource for F {
    fn next_id(&mut self) -> String {
        self()
    }
}
