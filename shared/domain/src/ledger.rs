//! The ledger's write rules: adjustments, holds with sourcing, and booking lapsed holds.

use std::collections::{BTreeMap, BTreeSet};

use crate::levels::Levels;
use crate::movement::{Deltas, Movement, MovementKind};
use crate::names::{Location, ReservationId, Sku};
use crate::quantity::Quantity;
use crate::refusal::{Refusal, Shortfall};
use crate::reservation::{Allocation, Reservation, ReservationLine, ReservationStatus, Ttl};
use crate::{IdSource, Timestamp};

/// The levels a decision may read and change, and the movements it booked. A store fills it with every row the
/// decision can touch (locked), runs the decision, and writes back [`StockBook::changed`] and
/// [`StockBook::movements`].
#[derive(Debug, Clone, Default)]
pub struct StockBook {
    levels: BTreeMap<(Sku, Location), Levels>,
    changed: BTreeSet<(Sku, Location)>,
    movements: Vec<Movement>,
}

impl StockBook {
    pub fn new(levels: impl IntoIterator<Item = ((Sku, Location), Levels)>) -> Self {
        Self { levels: levels.into_iter().collect(), ..Self::default() }
    }

    /// The same levels with nothing booked yet: the starting point of the next decision.
    pub fn snapshot(&self) -> Self {
        Self { levels: self.levels.clone(), ..Self::default() }
    }

    /// Levels of one row; zero when the row does not exist yet.
    pub fn levels(&self, sku: &Sku, location: &Location) -> Levels {
        self.levels.get(&(sku.clone(), location.clone())).copied().unwrap_or_default()
    }

    /// Locations that have a row for this sku.
    pub fn locations_of<'a>(&'a self, sku: &'a Sku) -> impl Iterator<Item = &'a Location> + 'a {
        self.levels.keys().filter(move |(s, _)| s == sku).map(|(_, l)| l)
    }

    /// Books one movement: checks it fits, applies it, remembers it.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        now: Timestamp,
        ids: &mut impl IdSource,
        sku: &Sku,
        location: &Location,
        kind: MovementKind,
        deltas: Deltas,
        reason: &str,
        reference: &Option<String>,
        cause: &str,
    ) -> Result<(), Refusal> {
        let key = (sku.clone(), location.clone());
        let next = self.levels.get(&key).copied().unwrap_or_default().apply(&deltas)?;
        self.levels.insert(key.clone(), next);
        self.changed.insert(key);
        self.movements.push(Movement {
            id: ids.next_id(),
            at: now,
            sku: sku.clone(),
            location: location.clone(),
            kind,
            deltas,
            reason: reason.to_owned(),
            reference: reference.clone(),
            cause: Some(cause.to_owned()),
        });
        Ok(())
    }

    /// Rows whose figures changed, with their new levels.
    pub fn changed(&self) -> impl Iterator<Item = (&(Sku, Location), &Levels)> {
        self.changed.iter().filter_map(|k| self.levels.get(k).map(|l| (k, l)))
    }

    pub fn movements(&self) -> &[Movement] {
        &self.movements
    }

    pub fn into_movements(self) -> Vec<Movement> {
        self.movements
    }
}

/// Where a line's units come from: (location, units), in sourcing order.
type Allocations = Vec<(Location, i64)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// Add (or, negative, take away) this many units.
    Delta(i64),
    /// on_hand becomes exactly this (a count).
    Set(i64),
}

/// One line of an adjustment batch, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub sku: Sku,
    pub location: Location,
    pub op: ChangeOp,
    pub reason: String,
    pub reference: Option<String>,
    pub expected_on_hand: Option<i64>,
}

/// Applies an adjustment batch all-or-nothing. Changes to the same row apply in order; `expected_on_hand` is
/// compared with the row as the earlier changes left it. A `set` to the current figure books nothing.
pub fn adjust(
    book: &mut StockBook,
    known_locations: &BTreeSet<Location>,
    changes: &[Change],
    cause: &str,
    now: Timestamp,
    ids: &mut impl IdSource,
) -> Result<(), Refusal> {
    for c in changes {
        if !known_locations.contains(&c.location) {
            return Err(Refusal::UnknownLocation { location: c.location.clone() });
        }
        let current = book.levels(&c.sku, &c.location).on_hand;
        if let Some(expected) = c.expected_on_hand
            && expected != current
        {
            return Err(Refusal::OnHandMismatch {
                sku: c.sku.clone(),
                location: c.location.clone(),
                expected,
                actual: current,
            });
        }
        let delta = match c.op {
            ChangeOp::Delta(d) => d,
            ChangeOp::Set(target) => target - current,
        };
        let would_be = current.checked_add(delta).ok_or(Refusal::QuantityOverflow)?;
        if would_be < 0 {
            return Err(Refusal::NegativeOnHand { sku: c.sku.clone(), location: c.location.clone(), would_be });
        }
        if delta != 0 {
            let d = Deltas { on_hand: delta, ..Deltas::default() };
            book.record(now, ids, &c.sku, &c.location, MovementKind::Adjustment, d, &c.reason, &c.reference, cause)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldLine {
    pub sku: Sku,
    pub quantity: Quantity,
    /// Draw only from here; without it, lines are sourced across locations by priority.
    pub location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub lines: Vec<HoldLine>,
    pub ttl: Ttl,
    pub reference: Option<String>,
}

/// Places a hold on every line or on none. `locations` is every known location, lowest priority number first;
/// the book must hold every row of every sku in the request, with lapsed holds already booked
/// (see [`expire_lapsed`]), so that `available` is what can really be promised.
pub fn hold(
    book: &mut StockBook,
    locations: &[Location],
    request: &HoldRequest,
    id: ReservationId,
    now: Timestamp,
    ids: &mut impl IdSource,
) -> Result<Reservation, Refusal> {
    let mut seen = BTreeSet::new();
    for line in &request.lines {
        if !seen.insert(&line.sku) {
            return Err(Refusal::DuplicateLine { sku: line.sku.clone() });
        }
        if let Some(loc) = &line.location
            && !locations.contains(loc)
        {
            return Err(Refusal::UnknownLocation { location: loc.clone() });
        }
    }

    let mut shortfalls = Vec::new();
    // (sku, quantity, [(location, units)]) per line, in request order.
    let mut planned: Vec<(Sku, i64, Allocations)> = Vec::new();
    for line in &request.lines {
        let candidates: Vec<&Location> = match &line.location {
            Some(loc) => vec![loc],
            None => {
                let stocked: BTreeSet<&Location> = book.locations_of(&line.sku).collect();
                locations.iter().filter(|l| stocked.contains(l)).collect()
            }
        };
        let mut remaining = line.quantity.get();
        let mut total_available = 0i64;
        let mut allocations = Vec::new();
        for loc in candidates {
            let available = book.levels(&line.sku, loc).available();
            if available <= 0 {
                continue;
            }
            total_available = total_available.saturating_add(available);
            let take = available.min(remaining);
            if take > 0 {
                allocations.push((loc.clone(), take));
                remaining -= take;
            }
        }
        if remaining > 0 {
            shortfalls.push(Shortfall {
                sku: line.sku.clone(),
                requested: line.quantity.get(),
                available: total_available,
            });
        }
        planned.push((line.sku.clone(), line.quantity.get(), allocations));
    }
    if !shortfalls.is_empty() {
        return Err(Refusal::InsufficientStock { shortfalls });
    }

    let cause = format!("reservation:{id}");
    let mut lines = Vec::with_capacity(planned.len());
    for (sku, quantity, allocations) in planned {
        let mut booked = Vec::with_capacity(allocations.len());
        for (location, take) in allocations {
            let d = Deltas { reserved: take, ..Deltas::default() };
            book.record(now, ids, &sku, &location, MovementKind::Hold, d, "hold", &request.reference, &cause)?;
            booked.push(Allocation { location, quantity: take, committed: 0, state: ReservationStatus::Held });
        }
        lines.push(ReservationLine { sku, quantity, allocations: booked });
    }
    Ok(Reservation {
        id,
        status: ReservationStatus::Held,
        reference: request.reference.clone(),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(request.ttl.get()),
        updated_at: now,
        lines,
    })
}

/// A hold allocation found past its expiry while its reservation is still stored as held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedAllocation {
    pub reservation_id: ReservationId,
    pub sku: Sku,
    pub location: Location,
    pub quantity: i64,
    pub reference: Option<String>,
}

/// Books lapsed allocations as expired on the rows of the book, so that their units can be promised again and
/// the reservation's commit sees them gone.
pub fn expire_lapsed(
    book: &mut StockBook,
    lapsed: &[LapsedAllocation],
    now: Timestamp,
    ids: &mut impl IdSource,
) -> Result<(), Refusal> {
    for a in lapsed {
        let d = Deltas { reserved: -a.quantity, ..Deltas::default() };
        let cause = format!("reservation:{}", a.reservation_id);
        book.record(now, ids, &a.sku, &a.location, MovementKind::Expire, d, "expired", &a.reference, &cause)?;
    }
    Ok(())
}
