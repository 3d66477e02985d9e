//! Where the store's time and ids come from: handed in, so that tests move time instead of waiting for it.

use std::sync::atomic::{AtomicI64, Ordering};

use stockroom_domain::Timestamp;

/// The store's clock, at the precision it stores (microseconds), so that a first answer and a later read of the
/// same reservation show the same instants.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
}

/// Where new ids come from (movements, events, claims, reservations without a client's id).
pub trait Ids: Send + Sync + std::fmt::Debug + 'static {
    fn next_id(&self) -> String;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        micros(chrono::Utc::now())
    }
}

/// UUIDv7: unique, and ordered by time, so that ids sort the way things happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidV7;

impl Ids for UuidV7 {
    fn next_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

/// A clock that moves only when told: for tests of expiry, leases and windows.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    /// Starts at `at` (microseconds kept).
    pub fn starting_at(at: Timestamp) -> Self {
        Self { micros: AtomicI64::new(at.timestamp_micros()) }
    }

    /// Starts at the wall clock's now.
    pub fn now_ish() -> Self {
        Self::starting_at(SystemClock.now())
    }

    pub fn advance(&self, by: std::time::Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(us, Ordering::SeqCst);
    }

    pub fn set(&self, at: Timestamp) {
        self.micros.store(at.timestamp_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let us = self.micros.load(Ordering::SeqCst);
        chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
    }
}

/// The wall clock, moved ahead when a test says so: time still passes on its own, and a test jumps over what it
/// would otherwise wait for (a hold's expiry, a lease).
#[derive(Debug, Default)]
pub struct OffsetClock {
    ahead_micros: AtomicI64,
}

impl OffsetClock {
    pub fn advance(&self, by: std::time::Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.ahead_micros.fetch_add(us, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let ahead = chrono::TimeDelta::microseconds(self.ahead_micros.load(Ordering::SeqCst));
        micros(chrono::Utc::now() + ahead)
    }
}

/// `t` cut to whole microseconds.
pub fn micros(t: Timestamp) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
