//! Reservations: holds placed at checkout that expire, become sales, ship or are given back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ledger::StockBook;
use crate::movement::{Deltas, MovementKind};
use crate::names::{Location, ReservationId, Sku};
use crate::quantity::Quantity;
use crate::refusal::Refusal;
use crate::{IdSource, Timestamp};

pub const TTL_SECONDS_DEFAULT: i64 = 900;
pub const TTL_SECONDS_MAX: i64 = 86_400;

/// How long a hold lives: 1 s to a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(i64);

impl Ttl {
    pub fn seconds(seconds: i64) -> Result<Self, String> {
        if (1..=TTL_SECONDS_MAX).contains(&seconds) {
            Ok(Self(seconds))
        } else {
            Err(format!("ttl_seconds must be between 1 and {TTL_SECONDS_MAX}; got {seconds}"))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for Ttl {
    fn default() -> Self {
        Self(TTL_SECONDS_DEFAULT)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Held,
    Committed,
    Fulfilled,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Fulfilled => "fulfilled",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "held" => Self::Held,
            "committed" => Self::Committed,
            "fulfilled" => Self::Fulfilled,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one allocation. An allocation can be booked `Expired` on its own, by a hold on the same
/// (sku, location) that found it past its expiry and gave its units away; a commit then sees it and refuses.
pub type AllocationState = ReservationStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allocation {
    pub location: Location,
    /// Units held here when the reservation was placed.
    pub quantity: i64,
    /// Units of those sold by the commit (the rest were released then).
    pub committed: i64,
    pub state: AllocationState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReservationLine {
    pub sku: Sku,
    pub quantity: i64,
    pub allocations: Vec<Allocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    /// As stored; see [`Reservation::status_at`] for what a reader sees.
    pub status: ReservationStatus,
    pub reference: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub updated_at: Timestamp,
    pub lines: Vec<ReservationLine>,
}

/// One line of a partial commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommitLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

impl Reservation {
    /// The status a reader sees at `now`: a hold past its expiry is expired whether or not anyone booked it.
    pub fn status_at(&self, now: Timestamp) -> ReservationStatus {
        if self.status == ReservationStatus::Held && self.is_lapsed(now) {
            ReservationStatus::Expired
        } else {
            self.status
        }
    }

    fn is_lapsed(&self, now: Timestamp) -> bool {
        now >= self.expires_at || self.allocations().any(|(_, a)| a.state == ReservationStatus::Expired)
    }

    pub fn allocations(&self) -> impl Iterator<Item = (&Sku, &Allocation)> {
        self.lines.iter().flat_map(|l| l.allocations.iter().map(move |a| (&l.sku, a)))
    }

    /// Every (sku, location) this reservation draws from, sorted: the rows a store must lock to change it.
    pub fn keys(&self) -> Vec<(Sku, Location)> {
        let mut keys: Vec<_> = self.allocations().map(|(s, a)| (s.clone(), a.location.clone())).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn cause(&self) -> String {
        format!("reservation:{}", self.id)
    }

    /// held → committed. Without `lines` everything held is sold; with them, each listed sku sells that many
    /// (drawn from its allocations in sourcing order) and everything else is released.
    pub fn commit(
        &mut self,
        lines: Option<&[CommitLine]>,
        book: &mut StockBook,
        now: Timestamp,
        ids: &mut impl IdSource,
    ) -> Result<(), Refusal> {
        self.require_live_hold("commit", now)?;
        if let Some(lines) = lines {
            let mut seen = std::collections::BTreeSet::new();
            for l in lines {
                if !seen.insert(&l.sku) {
                    return Err(Refusal::DuplicateLine { sku: l.sku.clone() });
                }
                let held = self.lines.iter().find(|r| r.sku == l.sku).map(|r| r.quantity);
                match held {
                    None => return Err(Refusal::LineNotInReservation { sku: l.sku.clone() }),
                    Some(held) if l.quantity.get() > held => {
                        return Err(Refusal::CommitExceedsHeld {
                            sku: l.sku.clone(),
                            held,
                            requested: l.quantity.get(),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        let cause = self.cause();
        let reference = self.reference.clone();
        for line in &mut self.lines {
            let mut to_sell = match lines {
                None => line.quantity,
                Some(lines) => lines.iter().find(|l| l.sku == line.sku).map_or(0, |l| l.quantity.get()),
            };
            for a in &mut line.allocations {
                let sold = to_sell.min(a.quantity);
                to_sell -= sold;
                if sold > 0 {
                    let d = Deltas { reserved: -sold, committed: sold, on_hand: 0 };
                    book.record(
                        now,
                        ids,
                        &line.sku,
                        &a.location,
                        MovementKind::Commit,
                        d,
                        "commit",
                        &reference,
                        &cause,
                    )?;
                }
                if a.quantity > sold {
                    let d = Deltas { reserved: -(a.quantity - sold), ..Deltas::default() };
                    book.record(
                        now,
                        ids,
                        &line.sku,
                        &a.location,
                        MovementKind::Release,
                        d,
                        "commit_remainder",
                        &reference,
                        &cause,
                    )?;
                }
                a.committed = sold;
                a.state = if sold > 0 { ReservationStatus::Committed } else { ReservationStatus::Released };
            }
        }
        self.status = ReservationStatus::Committed;
        self.updated_at = now;
        Ok(())
    }

    /// committed → fulfilled: the sold units leave the building.
    pub fn fulfil(&mut self, book: &mut StockBook, now: Timestamp, ids: &mut impl IdSource) -> Result<(), Refusal> {
        if self.status != ReservationStatus::Committed {
            return Err(self.invalid_state("fulfil", now));
        }
        // A count may have found fewer units than were sold; shipping them anyway would take on_hand below zero,
        // which no adjustment may do either. Refuse before booking anything.
        for line in &self.lines {
            for a in line.allocations.iter().filter(|a| a.state == ReservationStatus::Committed) {
                let would_be = book.levels(&line.sku, &a.location).on_hand - a.committed;
                if would_be < 0 {
                    let (sku, location) = (line.sku.clone(), a.location.clone());
                    return Err(Refusal::NegativeOnHand { sku, location, would_be });
                }
            }
        }
        let cause = self.cause();
        let reference = self.reference.clone();
        for line in &mut self.lines {
            for a in line.allocations.iter_mut().filter(|a| a.state == ReservationStatus::Committed) {
                let d = Deltas { on_hand: -a.committed, committed: -a.committed, reserved: 0 };
                book.record(now, ids, &line.sku, &a.location, MovementKind::Fulfil, d, "fulfil", &reference, &cause)?;
                a.state = ReservationStatus::Fulfilled;
            }
        }
        self.status = ReservationStatus::Fulfilled;
        self.updated_at = now;
        Ok(())
    }

    /// Gives the stock back: a live hold is released, a sale is returned. Releasing what is already released or
    /// expired changes nothing (a lapsed hold is booked as expired on the way). A shipped reservation cannot be
    /// released.
    pub fn release(&mut self, book: &mut StockBook, now: Timestamp, ids: &mut impl IdSource) -> Result<(), Refusal> {
        match self.status_at(now) {
            ReservationStatus::Released => Ok(()),
            ReservationStatus::Expired => self.expire(book, now, ids),
            ReservationStatus::Fulfilled => Err(self.invalid_state("release", now)),
            status @ (ReservationStatus::Held | ReservationStatus::Committed) => {
                let cause = self.cause();
                let reference = self.reference.clone();
                for line in &mut self.lines {
                    for a in line.allocations.iter_mut().filter(|a| a.state == status) {
                        let d = match status {
                            ReservationStatus::Held => Deltas { reserved: -a.quantity, ..Deltas::default() },
                            _ => Deltas { committed: -a.committed, ..Deltas::default() },
                        };
                        book.record(
                            now,
                            ids,
                            &line.sku,
                            &a.location,
                            MovementKind::Release,
                            d,
                            "release",
                            &reference,
                            &cause,
                        )?;
                        a.state = ReservationStatus::Released;
                    }
                }
                self.status = ReservationStatus::Released;
                self.updated_at = now;
                Ok(())
            }
        }
    }

    /// Books a lapsed hold as expired: every allocation still held gives its units back. Does nothing to a
    /// reservation that is not a lapsed hold.
    pub fn expire(&mut self, book: &mut StockBook, now: Timestamp, ids: &mut impl IdSource) -> Result<(), Refusal> {
        if self.status != ReservationStatus::Held || !self.is_lapsed(now) {
            return Ok(());
        }
        let cause = self.cause();
        let reference = self.reference.clone();
        for line in &mut self.lines {
            for a in line.allocations.iter_mut().filter(|a| a.state == ReservationStatus::Held) {
                let d = Deltas { reserved: -a.quantity, ..Deltas::default() };
                book.record(now, ids, &line.sku, &a.location, MovementKind::Expire, d, "expired", &reference, &cause)?;
                a.state = ReservationStatus::Expired;
            }
        }
        self.status = ReservationStatus::Expired;
        self.updated_at = now;
        Ok(())
    }

    fn require_live_hold(&self, action: &'static str, now: Timestamp) -> Result<(), Refusal> {
        match self.status_at(now) {
            ReservationStatus::Held => Ok(()),
            ReservationStatus::Expired => Err(Refusal::ReservationExpired { reservation_id: self.id.clone() }),
            _ => Err(self.invalid_state(action, now)),
        }
    }

    fn invalid_state(&self, action: &'static str, now: Timestamp) -> Refusal {
        Refusal::InvalidState { reservation_id: self.id.clone(), status: self.status_at(now), action }
    }
}
