//! Property tests of the ledger rules, driven the way a store drives them: each decision starts from the stored
//! levels with nothing booked (`StockBook::snapshot`), a refused decision is thrown away whole, and an accepted one
//! is appended to the ledger. Every expectation comes from a small model kept beside the domain's own values, so
//! a disagreement between the two fails the test.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use stockroom_domain::movement::replay;
use stockroom_domain::{
    Change, ChangeOp, CommitLine, HoldLine, HoldRequest, IdSource, LapsedAllocation, Levels, Location, Movement,
    MovementKind, Quantity, Refusal, Reservation, ReservationId, ReservationStatus, Shortfall, Sku, StockBook,
    Timestamp, Ttl, adjust, expire_lapsed, hold,
};

type Key = (Sku, Location);

const LOCATION_NAMES: [&str; 4] = ["loc-a", "loc-b", "loc-c", "loc-d"];

fn start() -> Timestamp {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid instant")
}

fn sku(i: usize) -> Sku {
    Sku::parse(&format!("sku-{i}")).expect("a valid sku")
}

fn location(i: usize) -> Location {
    Location::parse(LOCATION_NAMES[i]).expect("a valid location")
}

/// A location nobody created: adjusting or holding there must be refused.
fn nowhere() -> Location {
    Location::parse("nowhere").expect("a valid location")
}

fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("a valid quantity")
}

/// Movement ids from a counter, as the crate's docs suggest for tests.
fn counter() -> impl FnMut() -> String {
    let mut n = 0u64;
    move || {
        n += 1;
        format!("m-{n}")
    }
}

/// Locations sorted as the store lists them: priority, then name.
fn by_priority(priorities: &[i64]) -> Vec<Location> {
    let mut ranked: Vec<(i64, Location)> = priorities.iter().enumerate().map(|(i, p)| (*p, location(i))).collect();
    ranked.sort();
    ranked.into_iter().map(|(_, l)| l).collect()
}

/// The three stored figures movements change; safety stock is zero throughout these tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Figures {
    on_hand: i64,
    reserved: i64,
    committed: i64,
}

impl Figures {
    fn of(l: &Levels) -> Self {
        Self { on_hand: l.on_hand, reserved: l.reserved, committed: l.committed }
    }

    fn available(&self) -> i64 {
        self.on_hand - self.reserved - self.committed
    }
}

type ModelLevels = BTreeMap<Key, Figures>;

fn figures(levels: &ModelLevels, key: &Key) -> Figures {
    levels.get(key).copied().unwrap_or_default()
}

fn bump(levels: &mut ModelLevels, key: &Key, on_hand: i64, reserved: i64, committed: i64) {
    let f = levels.entry(key.clone()).or_default();
    f.on_hand += on_hand;
    f.reserved += reserved;
    f.committed += committed;
}

/// The model's view of one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelAllocation {
    sku: Sku,
    location: Location,
    quantity: i64,
    committed: i64,
    state: ReservationStatus,
}

/// The model's view of one reservation: stored status, expiry and allocations in sourcing order.
#[derive(Debug, Clone)]
struct ModelReservation {
    id: ReservationId,
    status: ReservationStatus,
    expires_at: Timestamp,
    reference: Option<String>,
    lines: Vec<(Sku, i64)>,
    allocations: Vec<ModelAllocation>,
}

impl ModelReservation {
    /// What a reader must see: the contract's rule 6, independent of any sweeper.
    fn status_at(&self, now: Timestamp) -> ReservationStatus {
        let lapsed = now >= self.expires_at || self.allocations.iter().any(|a| a.state == ReservationStatus::Expired);
        if self.status == ReservationStatus::Held && lapsed { ReservationStatus::Expired } else { self.status }
    }

    fn invalid(&self, action: &'static str, now: Timestamp) -> Refusal {
        Refusal::InvalidState { reservation_id: self.id.clone(), status: self.status_at(now), action }
    }

    fn commit(
        &mut self,
        levels: &mut ModelLevels,
        lines: Option<&[(Sku, i64)]>,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        match self.status_at(now) {
            ReservationStatus::Held => {}
            ReservationStatus::Expired => {
                return Err(Refusal::ReservationExpired { reservation_id: self.id.clone() });
            }
            _ => return Err(self.invalid("commit", now)),
        }
        if let Some(lines) = lines {
            let mut seen = BTreeSet::new();
            for (sku, q) in lines {
                if !seen.insert(sku.clone()) {
                    return Err(Refusal::DuplicateLine { sku: sku.clone() });
                }
                match self.lines.iter().find(|(s, _)| s == sku) {
                    None => return Err(Refusal::LineNotInReservation { sku: sku.clone() }),
                    Some((_, held)) if q > held => {
                        return Err(Refusal::CommitExceedsHeld { sku: sku.clone(), held: *held, requested: *q });
                    }
                    Some(_) => {}
                }
            }
        }
        for (sku, held) in &self.lines {
            let mut to_sell = match lines {
                None => *held,
                Some(lines) => lines.iter().find(|(s, _)| s == sku).map_or(0, |(_, q)| *q),
            };
            for a in self.allocations.iter_mut().filter(|a| &a.sku == sku) {
                let sold = to_sell.min(a.quantity);
                to_sell -= sold;
                bump(levels, &(a.sku.clone(), a.location.clone()), 0, -a.quantity, sold);
                a.committed = sold;
                a.state = if sold > 0 { ReservationStatus::Committed } else { ReservationStatus::Released };
            }
        }
        self.status = ReservationStatus::Committed;
        Ok(())
    }

    fn fulfil(&mut self, levels: &mut ModelLevels, now: Timestamp) -> Result<(), Refusal> {
        if self.status != ReservationStatus::Committed {
            return Err(self.invalid("fulfil", now));
        }
        // Shipping never takes on_hand below zero: when a count found fewer units than were sold, it is refused.
        for a in self.allocations.iter().filter(|a| a.state == ReservationStatus::Committed) {
            let would_be = figures(levels, &(a.sku.clone(), a.location.clone())).on_hand - a.committed;
            if would_be < 0 {
                return Err(Refusal::NegativeOnHand { sku: a.sku.clone(), location: a.location.clone(), would_be });
            }
        }
        for a in self.allocations.iter_mut().filter(|a| a.state == ReservationStatus::Committed) {
            bump(levels, &(a.sku.clone(), a.location.clone()), -a.committed, 0, -a.committed);
            a.state = ReservationStatus::Fulfilled;
        }
        self.status = ReservationStatus::Fulfilled;
        Ok(())
    }

    fn release(&mut self, levels: &mut ModelLevels, now: Timestamp) -> Result<(), Refusal> {
        match self.status_at(now) {
            ReservationStatus::Released => Ok(()),
            ReservationStatus::Expired => self.expire(levels, now),
            ReservationStatus::Fulfilled => Err(self.invalid("release", now)),
            status => {
                for a in self.allocations.iter_mut().filter(|a| a.state == status) {
                    let key = (a.sku.clone(), a.location.clone());
                    if status == ReservationStatus::Held {
                        bump(levels, &key, 0, -a.quantity, 0);
                    } else {
                        bump(levels, &key, 0, 0, -a.committed);
                    }
                    a.state = ReservationStatus::Released;
                }
                self.status = ReservationStatus::Released;
                Ok(())
            }
        }
    }

    fn expire(&mut self, levels: &mut ModelLevels, now: Timestamp) -> Result<(), Refusal> {
        if self.status != ReservationStatus::Held || self.status_at(now) != ReservationStatus::Expired {
            return Ok(());
        }
        for a in self.allocations.iter_mut().filter(|a| a.state == ReservationStatus::Held) {
            bump(levels, &(a.sku.clone(), a.location.clone()), 0, -a.quantity, 0);
            a.state = ReservationStatus::Expired;
        }
        self.status = ReservationStatus::Expired;
        Ok(())
    }
}

/// What a hold should do on these levels, worked out from the contract: lines on distinct skus at known locations;
/// a line without a location is drawn from the stocked locations in priority order, each giving what it has
/// available; any line that cannot be filled makes the whole hold a shortfall.
type Plan = Vec<(Sku, i64, Vec<(Location, i64)>)>;

fn plan_hold(levels: &ModelLevels, locations: &[Location], lines: &[HoldLine]) -> Result<Plan, Refusal> {
    let mut seen = BTreeSet::new();
    for line in lines {
        if !seen.insert(line.sku.clone()) {
            return Err(Refusal::DuplicateLine { sku: line.sku.clone() });
        }
        if let Some(loc) = &line.location
            && !locations.contains(loc)
        {
            return Err(Refusal::UnknownLocation { location: loc.clone() });
        }
    }
    let mut plan = Vec::new();
    let mut shortfalls = Vec::new();
    for line in lines {
        let candidates: Vec<Location> = match &line.location {
            Some(loc) => vec![loc.clone()],
            None => {
                locations.iter().filter(|l| levels.contains_key(&(line.sku.clone(), (*l).clone()))).cloned().collect()
            }
        };
        let wanted = line.quantity.get();
        let mut remaining = wanted;
        let mut offered = 0;
        let mut allocations = Vec::new();
        for loc in candidates {
            let available = figures(levels, &(line.sku.clone(), loc.clone())).available().max(0);
            offered += available;
            let take = available.min(remaining);
            if take > 0 {
                allocations.push((loc, take));
                remaining -= take;
            }
        }
        if remaining > 0 {
            shortfalls.push(Shortfall { sku: line.sku.clone(), requested: wanted, available: offered });
        }
        plan.push((line.sku.clone(), wanted, allocations));
    }
    if shortfalls.is_empty() { Ok(plan) } else { Err(Refusal::InsufficientStock { shortfalls }) }
}

/// Everything a store would hold, plus the model kept beside it.
#[derive(Clone)]
struct World {
    skus: Vec<Sku>,
    /// Known locations, lowest priority number first: what `hold` is given.
    locations: Vec<Location>,
    known: BTreeSet<Location>,
    stored: StockBook,
    ledger: Vec<Movement>,
    reservations: Vec<Reservation>,
    model: ModelLevels,
    model_reservations: Vec<ModelReservation>,
    now: Timestamp,
    next_reservation: u32,
    next_batch: u32,
}

impl World {
    fn open(setup: &Setup, ids: &mut impl IdSource) -> Result<Self, TestCaseError> {
        let skus: Vec<Sku> = (0..setup.opening.len()).map(sku).collect();
        let locations = by_priority(&setup.priorities);
        let known: BTreeSet<Location> = locations.iter().cloned().collect();
        let mut rows = Vec::new();
        let mut changes = Vec::new();
        let mut model = ModelLevels::new();
        for (i, per_location) in setup.opening.iter().enumerate() {
            for (j, on_hand) in per_location.iter().enumerate() {
                let Some(on_hand) = *on_hand else { continue };
                let key = (sku(i), location(j));
                rows.push((key.clone(), Levels::default()));
                model.insert(key.clone(), Figures { on_hand, ..Figures::default() });
                changes.push(Change {
                    sku: key.0,
                    location: key.1,
                    op: ChangeOp::Set(on_hand),
                    reason: "opening".into(),
                    reference: None,
                    expected_on_hand: Some(0),
                });
            }
        }
        // Opening stock is booked like any other, so that the ledger explains every figure from the start.
        let mut book = StockBook::new(rows);
        let opened = adjust(&mut book, &known, &changes, "adjustment:opening", start(), ids);
        prop_assert_eq!(opened, Ok(()));
        let mut world = World {
            skus,
            locations,
            known,
            stored: StockBook::default(),
            ledger: Vec::new(),
            reservations: Vec::new(),
            model,
            model_reservations: Vec::new(),
            now: start(),
            next_reservation: 0,
            next_batch: 0,
        };
        world.persist(&book);
        Ok(world)
    }

    /// An accepted decision: its movements join the ledger and its levels become the stored ones.
    fn persist(&mut self, book: &StockBook) {
        self.ledger.extend_from_slice(book.movements());
        self.stored = book.snapshot();
    }

    /// Every row worth looking at: all skus at all known locations and at an unknown one, plus anything the
    /// ledger or the model has heard of.
    fn keys(&self) -> BTreeSet<Key> {
        let mut keys: BTreeSet<Key> = self.model.keys().cloned().collect();
        for s in &self.skus {
            for l in self.locations.iter().chain([&nowhere()]) {
                keys.insert((s.clone(), l.clone()));
            }
        }
        keys.extend(self.ledger.iter().map(|m| (m.sku.clone(), m.location.clone())));
        keys
    }

    fn pick(&self, i: usize) -> Option<usize> {
        (!self.reservations.is_empty()).then(|| i % self.reservations.len())
    }
}

/// A refused decision must leave the book it was handed as it was: same levels, nothing booked, nothing changed.
fn assert_untouched(before: &StockBook, after: &StockBook, keys: &BTreeSet<Key>) -> Result<(), TestCaseError> {
    prop_assert!(after.movements().is_empty(), "a refusal booked {:?}", after.movements());
    prop_assert_eq!(after.changed().count(), 0);
    for (s, l) in keys {
        prop_assert_eq!(before.levels(s, l), after.levels(s, l), "refusal changed {} at {}", s, l);
    }
    Ok(())
}

fn assert_booked(book: &StockBook, now: Timestamp, kinds: &[MovementKind], cause: &str) -> Result<(), TestCaseError> {
    for m in book.movements() {
        prop_assert_eq!(m.at, now);
        prop_assert!(kinds.contains(&m.kind), "unexpected {:?} movement", m.kind);
        prop_assert_eq!(m.cause.as_deref(), Some(cause));
    }
    Ok(())
}

/// The invariants, checked against the model after every step.
fn check(w: &World) -> Result<(), TestCaseError> {
    let replayed = replay(&w.ledger);
    prop_assert!(replayed.is_ok(), "replay refused: {:?}", replayed);
    let replayed = replayed.unwrap_or_default();

    let ids: BTreeSet<&str> = w.ledger.iter().map(|m| m.id.as_str()).collect();
    prop_assert_eq!(ids.len(), w.ledger.len(), "movement ids repeat");

    for key in &w.keys() {
        let (s, l) = key;
        let stored = w.stored.levels(s, l);
        // (a) the ledger explains the stored figures.
        prop_assert_eq!(replayed.get(key).copied().unwrap_or_default(), stored, "replay differs at {} / {}", s, l);
        // The stored figures are what the model expects.
        prop_assert_eq!(Figures::of(&stored), figures(&w.model, key), "levels differ from the model at {} / {}", s, l);
        // (b) nothing negative.
        prop_assert!(
            stored.on_hand >= 0 && stored.reserved >= 0 && stored.committed >= 0,
            "{} / {}: {:?}",
            s,
            l,
            stored
        );
        // (e) reserved and committed are what the reservations say they are.
        let held: i64 = w
            .reservations
            .iter()
            .flat_map(|r| r.allocations())
            .filter(|(sk, a)| *sk == s && &a.location == l && a.state == ReservationStatus::Held)
            .map(|(_, a)| a.quantity)
            .sum();
        let sold: i64 = w
            .reservations
            .iter()
            .flat_map(|r| r.allocations())
            .filter(|(sk, a)| *sk == s && &a.location == l && a.state == ReservationStatus::Committed)
            .map(|(_, a)| a.committed)
            .sum();
        prop_assert_eq!(stored.reserved, held, "reserved at {} / {} is not the sum of held allocations", s, l);
        prop_assert_eq!(stored.committed, sold, "committed at {} / {} is not the sum of sold allocations", s, l);
    }

    // Rows exist where the model says they do: sourcing reads them.
    for s in &w.skus {
        let stocked: BTreeSet<&Location> = w.stored.locations_of(s).collect();
        let expected: BTreeSet<&Location> = w.model.keys().filter(|(sk, _)| sk == s).map(|(_, l)| l).collect();
        prop_assert_eq!(stocked, expected);
    }

    prop_assert_eq!(w.reservations.len(), w.model_reservations.len());
    for (r, m) in w.reservations.iter().zip(&w.model_reservations) {
        prop_assert_eq!(&r.id, &m.id);
        prop_assert_eq!(r.status, m.status, "stored status of {}", r.id);
        prop_assert_eq!(r.expires_at, m.expires_at);
        prop_assert_eq!(&r.reference, &m.reference);
        prop_assert_eq!(r.status_at(w.now), m.status_at(w.now), "status_at of {}", r.id);
        let allocations: Vec<ModelAllocation> = r
            .allocations()
            .map(|(s, a)| ModelAllocation {
                sku: s.clone(),
                location: a.location.clone(),
                quantity: a.quantity,
                committed: a.committed,
                state: a.state,
            })
            .collect();
        prop_assert_eq!(&allocations, &m.allocations, "allocations of {}", r.id);
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Setup {
    /// Priority of `loc-a`, `loc-b`, ...; ties are broken by name, as the store does.
    priorities: Vec<i64>,
    /// Opening on_hand per sku per location; `None` is a row that does not exist.
    opening: Vec<Vec<Option<i64>>>,
}

fn setups() -> impl Strategy<Value = Setup> {
    (2..=3usize, 2..=3usize)
        .prop_flat_map(|(locations, skus)| {
            (vec(0..4i64, locations), vec(vec(option::weighted(0.8, 0..=20i64), locations), skus))
        })
        .prop_map(|(priorities, opening)| Setup { priorities, opening })
}

#[derive(Debug, Clone, Copy)]
enum AdjustOp {
    Delta(i64),
    Set(i64),
}

#[derive(Debug, Clone)]
struct AdjustSpec {
    sku: usize,
    /// `None`: a location nobody created.
    location: Option<usize>,
    op: AdjustOp,
    /// Offset of `expected_on_hand` from the real figure: 0 is a matching compare-and-set.
    expected: Option<i64>,
}

#[derive(Debug, Clone)]
enum Op {
    Adjust(Vec<AdjustSpec>),
    /// Line `i` is on sku `start + i`, so a third line on two skus repeats one. Location: `None` sources by
    /// priority, `Some(None)` names an unknown location.
    Hold {
        start: usize,
        lines: Vec<(i64, Option<Option<usize>>)>,
        ttl_seconds: i64,
        reference: bool,
    },
    Commit {
        reservation: usize,
        lines: Option<Vec<(usize, i64)>>,
    },
    Fulfil {
        reservation: usize,
    },
    Release {
        reservation: usize,
    },
    Expire {
        reservation: usize,
    },
    Advance {
        seconds: i64,
    },
}

fn adjust_specs() -> impl Strategy<Value = AdjustSpec> {
    let op = prop_oneof![
        (-15..=15i64).prop_filter("a delta moves something", |d| *d != 0).prop_map(AdjustOp::Delta),
        (0..=30i64).prop_map(AdjustOp::Set),
    ];
    let expected = prop_oneof![6 => Just(None), 3 => Just(Some(0)), 1 => (-3..=3i64).prop_map(Some)];
    (0..3usize, option::weighted(0.93, 0..3usize), op, expected).prop_map(|(sku, location, op, expected)| AdjustSpec {
        sku,
        location,
        op,
        expected,
    })
}

fn ops() -> impl Strategy<Value = Op> {
    let hold_line = (1..=12i64, option::weighted(0.35, option::weighted(0.9, 0..3usize)));
    let ttl = prop_oneof![1..=600i64, 1..=86_400i64];
    let advance = prop_oneof![1..=300i64, 300..=7_200i64, 7_200..=100_000i64];
    prop_oneof![
        3 => vec(adjust_specs(), 1..=2).prop_map(Op::Adjust),
        5 => (0..3usize, vec(hold_line, 1..=3), ttl, any::<bool>())
            .prop_map(|(start, lines, ttl_seconds, reference)| Op::Hold { start, lines, ttl_seconds, reference }),
        3 => (0..1_000usize, option::of(vec((0..3usize, 1..=12i64), 1..=2)))
            .prop_map(|(reservation, lines)| Op::Commit { reservation, lines }),
        2 => (0..1_000usize).prop_map(|reservation| Op::Fulfil { reservation }),
        1 => (0..1_000usize).prop_map(|reservation| Op::Release { reservation }),
        1 => (0..1_000usize).prop_map(|reservation| Op::Expire { reservation }),
        2 => advance.prop_map(|seconds| Op::Advance { seconds }),
    ]
}

fn step_adjust(w: &mut World, specs: &[AdjustSpec], ids: &mut impl IdSource) -> Result<(), TestCaseError> {
    // Build the batch, aiming `expected_on_hand` at the figure as the earlier lines of the batch leave it.
    let mut running: BTreeMap<Key, i64> = BTreeMap::new();
    let mut changes = Vec::new();
    for spec in specs {
        let s = w.skus[spec.sku % w.skus.len()].clone();
        let l = spec.location.map_or_else(nowhere, |i| w.locations[i % w.locations.len()].clone());
        let key = (s.clone(), l.clone());
        let current = running.get(&key).copied().unwrap_or(figures(&w.model, &key).on_hand);
        let op = match spec.op {
            AdjustOp::Delta(d) => ChangeOp::Delta(d),
            AdjustOp::Set(v) => ChangeOp::Set(v),
        };
        let target = match spec.op {
            AdjustOp::Delta(d) => current + d,
            AdjustOp::Set(v) => v,
        };
        if target >= 0 {
            running.insert(key, target);
        }
        changes.push(Change {
            sku: s,
            location: l,
            op,
            reason: "count".into(),
            reference: None,
            expected_on_hand: spec.expected.map(|offset| current + offset),
        });
    }

    // What the batch should do: every line in order, the first bad one refusing the whole batch.
    let mut expected_levels = w.model.clone();
    let mut expected = Ok(());
    let mut booked = 0;
    for c in &changes {
        let key = (c.sku.clone(), c.location.clone());
        if !w.known.contains(&c.location) {
            expected = Err(Refusal::UnknownLocation { location: c.location.clone() });
            break;
        }
        let current = figures(&expected_levels, &key).on_hand;
        if let Some(e) = c.expected_on_hand
            && e != current
        {
            expected = Err(Refusal::OnHandMismatch {
                sku: c.sku.clone(),
                location: c.location.clone(),
                expected: e,
                actual: current,
            });
            break;
        }
        let would_be = match c.op {
            ChangeOp::Delta(d) => current + d,
            ChangeOp::Set(v) => v,
        };
        if would_be < 0 {
            expected = Err(Refusal::NegativeOnHand { sku: c.sku.clone(), location: c.location.clone(), would_be });
            break;
        }
        if would_be != current {
            bump(&mut expected_levels, &key, would_be - current, 0, 0);
            booked += 1;
        }
    }

    w.next_batch += 1;
    let cause = format!("adjustment:batch-{}", w.next_batch);
    let mut book = w.stored.snapshot();
    let result = adjust(&mut book, &w.known, &changes, &cause, w.now, ids);
    prop_assert_eq!(&result, &expected);
    // On a refusal `adjust` has already booked the good lines before the bad one into the book it was handed
    // (it is all-or-nothing only together with the store, which throws that book away). Pin that down exactly,
    // so that a change in it is noticed; the book is then discarded as the store does.
    prop_assert_eq!(book.movements().len(), booked);
    assert_booked(&book, w.now, &[MovementKind::Adjustment], &cause)?;
    if result.is_ok() {
        w.persist(&book);
        w.model = expected_levels;
    }
    Ok(())
}

fn step_hold(
    w: &mut World,
    start: usize,
    lines: &[(i64, Option<Option<usize>>)],
    ttl_seconds: i64,
    reference: bool,
    ids: &mut impl IdSource,
) -> Result<(), TestCaseError> {
    let attempt_from = w.clone();
    let request_lines: Vec<HoldLine> = lines
        .iter()
        .enumerate()
        .map(|(i, (q, at))| HoldLine {
            sku: w.skus[(start + i) % w.skus.len()].clone(),
            quantity: qty(*q),
            location: at.map(|at| at.map_or_else(nowhere, |j| w.locations[j % w.locations.len()].clone())),
        })
        .collect();
    let skus: BTreeSet<Sku> = request_lines.iter().map(|l| l.sku.clone()).collect();
    w.next_reservation += 1;
    let id = ReservationId::parse(&format!("r-{}", w.next_reservation)).expect("a valid id");
    let reference = reference.then(|| format!("order-{}", w.next_reservation));

    // As the store does: held allocations of stored-held reservations past their expiry, on the hold's skus, are
    // booked expired first, and marked expired while their reservation stays stored as held.
    let mut lapsed = Vec::new();
    let mut marks = Vec::new();
    for (ri, r) in w.reservations.iter().enumerate() {
        if r.status != ReservationStatus::Held || r.expires_at > w.now {
            continue;
        }
        let mut flat = 0;
        for (li, line) in r.lines.iter().enumerate() {
            for (ai, a) in line.allocations.iter().enumerate() {
                if a.state == ReservationStatus::Held && skus.contains(&line.sku) {
                    lapsed.push(LapsedAllocation {
                        reservation_id: r.id.clone(),
                        sku: line.sku.clone(),
                        location: a.location.clone(),
                        quantity: a.quantity,
                        reference: r.reference.clone(),
                    });
                    marks.push((ri, li, ai, flat));
                }
                flat += 1;
            }
        }
    }
    if !lapsed.is_empty() {
        let mut book = w.stored.snapshot();
        let booked = expire_lapsed(&mut book, &lapsed, w.now, ids);
        prop_assert_eq!(booked, Ok(()));
        prop_assert_eq!(book.movements().len(), lapsed.len());
        for (m, a) in book.movements().iter().zip(&lapsed) {
            prop_assert_eq!(m.kind, MovementKind::Expire);
            prop_assert_eq!(m.deltas.reserved, -a.quantity);
            prop_assert_eq!(m.deltas.on_hand, 0);
            prop_assert_eq!(m.deltas.committed, 0);
            prop_assert_eq!(m.cause.clone(), Some(format!("reservation:{}", a.reservation_id)));
        }
        w.persist(&book);
        for (ri, li, ai, flat) in marks {
            w.reservations[ri].lines[li].allocations[ai].state = ReservationStatus::Expired;
            let m = &mut w.model_reservations[ri].allocations[flat];
            m.state = ReservationStatus::Expired;
            bump(&mut w.model, &(m.sku.clone(), m.location.clone()), 0, -m.quantity, 0);
        }
        check(w)?;
    }

    let expected = plan_hold(&w.model, &w.locations, &request_lines);
    let before = w.stored.snapshot();
    let mut book = before.clone();
    let request = HoldRequest { lines: request_lines, ttl: Ttl::seconds(ttl_seconds).expect("a valid ttl"), reference };
    let result = hold(&mut book, &w.locations, &request, id.clone(), w.now, ids);
    match (result, expected) {
        (Ok(reservation), Ok(plan)) => {
            let got: Plan = reservation
                .lines
                .iter()
                .map(|l| {
                    (
                        l.sku.clone(),
                        l.quantity,
                        l.allocations.iter().map(|a| (a.location.clone(), a.quantity)).collect(),
                    )
                })
                .collect();
            prop_assert_eq!(&got, &plan);
            prop_assert!(
                reservation.allocations().all(|(_, a)| a.state == ReservationStatus::Held && a.committed == 0)
            );
            prop_assert_eq!(reservation.status, ReservationStatus::Held);
            prop_assert_eq!(&reservation.id, &id);
            prop_assert_eq!(reservation.created_at, w.now);
            prop_assert_eq!(reservation.expires_at, w.now + Duration::seconds(ttl_seconds));
            let cause = format!("reservation:{id}");
            assert_booked(&book, w.now, &[MovementKind::Hold], &cause)?;
            prop_assert_eq!(book.movements().len(), plan.iter().map(|(_, _, a)| a.len()).sum::<usize>());

            // (c) no oversell: a row drawn from had at least what was taken available, and no row that could
            // promise nothing negative before can promise a negative figure after.
            for (s, l) in &w.keys() {
                let was = Figures::of(&before.levels(s, l));
                let is = Figures::of(&book.levels(s, l));
                let taken = is.reserved - was.reserved;
                prop_assert!(taken >= 0);
                if taken > 0 {
                    prop_assert!(was.available() >= taken, "{} / {}: took {} of {}", s, l, taken, was.available());
                }
                if was.available() >= 0 {
                    prop_assert!(is.available() >= 0, "{} / {}: oversold to {}", s, l, is.available());
                }
            }

            w.persist(&book);
            let mut allocations = Vec::new();
            for (s, _, taken) in &plan {
                for (l, q) in taken {
                    bump(&mut w.model, &(s.clone(), l.clone()), 0, *q, 0);
                    allocations.push(ModelAllocation {
                        sku: s.clone(),
                        location: l.clone(),
                        quantity: *q,
                        committed: 0,
                        state: ReservationStatus::Held,
                    });
                }
            }
            w.model_reservations.push(ModelReservation {
                id,
                status: ReservationStatus::Held,
                expires_at: w.now + Duration::seconds(ttl_seconds),
                reference: request.reference.clone(),
                lines: plan.iter().map(|(s, q, _)| (s.clone(), *q)).collect(),
                allocations,
            });
            w.reservations.push(reservation);
        }
        (Err(refusal), Err(expected)) => {
            prop_assert_eq!(refusal, expected);
            // (d) all-or-nothing: the refused hold left the book it was handed alone.
            assert_untouched(&before, &book, &w.keys())?;
            // The store rolls back the whole attempt, the booking of lapsed holds included.
            *w = attempt_from;
        }
        (got, expected) => prop_assert!(false, "hold gave {:?}, expected {:?}", got, expected),
    }
    Ok(())
}

/// Runs one reservation command on the domain and on the model and holds them to the same outcome.
fn step_reservation<I: IdSource>(
    w: &mut World,
    ri: usize,
    ids: &mut I,
    kinds: &[MovementKind],
    act: impl FnOnce(&mut Reservation, &mut StockBook, Timestamp, &mut I) -> Result<(), Refusal>,
    model: impl FnOnce(&mut ModelReservation, &mut ModelLevels, Timestamp) -> Result<(), Refusal>,
) -> Result<(), TestCaseError> {
    let before = w.stored.snapshot();
    let mut book = before.clone();
    let mut reservation = w.reservations[ri].clone();
    let mut expected_reservation = w.model_reservations[ri].clone();
    let mut expected_levels = w.model.clone();
    let result = act(&mut reservation, &mut book, w.now, ids);
    let expected = model(&mut expected_reservation, &mut expected_levels, w.now);
    prop_assert_eq!(&result, &expected, "reservation {}", reservation.id);
    if result.is_ok() {
        assert_booked(&book, w.now, kinds, &format!("reservation:{}", reservation.id))?;
        w.persist(&book);
        w.reservations[ri] = reservation;
        w.model_reservations[ri] = expected_reservation;
        w.model = expected_levels;
    } else {
        // (d) a refusal books nothing, changes no level and leaves the reservation as stored.
        assert_untouched(&before, &book, &w.keys())?;
        prop_assert_eq!(&reservation, &w.reservations[ri]);
    }
    Ok(())
}

fn step(w: &mut World, op: &Op, ids: &mut impl IdSource) -> Result<(), TestCaseError> {
    match op {
        Op::Adjust(specs) => step_adjust(w, specs, ids),
        Op::Hold { start, lines, ttl_seconds, reference } => step_hold(w, *start, lines, *ttl_seconds, *reference, ids),
        Op::Commit { reservation, lines } => {
            let Some(ri) = w.pick(*reservation) else {
                return Ok(());
            };
            let lines: Option<Vec<(Sku, i64)>> =
                lines.as_ref().map(|ls| ls.iter().map(|(s, q)| (w.skus[s % w.skus.len()].clone(), *q)).collect());
            let commit_lines: Option<Vec<CommitLine>> = lines
                .as_ref()
                .map(|ls| ls.iter().map(|(s, q)| CommitLine { sku: s.clone(), quantity: qty(*q) }).collect());
            step_reservation(
                w,
                ri,
                ids,
                &[MovementKind::Commit, MovementKind::Release],
                |r, book, now, ids| r.commit(commit_lines.as_deref(), book, now, ids),
                |m, levels, now| m.commit(levels, lines.as_deref(), now),
            )
        }
        Op::Fulfil { reservation } => {
            let Some(ri) = w.pick(*reservation) else {
                return Ok(());
            };
            step_reservation(
                w,
                ri,
                ids,
                &[MovementKind::Fulfil],
                |r, b, now, ids| r.fulfil(b, now, ids),
                |m, l, now| m.fulfil(l, now),
            )
        }
        Op::Release { reservation } => {
            let Some(ri) = w.pick(*reservation) else {
                return Ok(());
            };
            step_reservation(
                w,
                ri,
                ids,
                &[MovementKind::Release, MovementKind::Expire],
                |r, b, now, ids| r.release(b, now, ids),
                |m, l, now| m.release(l, now),
            )
        }
        Op::Expire { reservation } => {
            let Some(ri) = w.pick(*reservation) else {
                return Ok(());
            };
            step_reservation(
                w,
                ri,
                ids,
                &[MovementKind::Expire],
                |r, b, now, ids| r.expire(b, now, ids),
                |m, l, now| m.expire(l, now),
            )
        }
        Op::Advance { seconds } => {
            w.now += Duration::seconds(*seconds);
            Ok(())
        }
    }
}

/// Levels of a few skus at a few locations, for the single-decision properties.
#[derive(Debug, Clone)]
struct Shelf {
    priorities: Vec<i64>,
    /// Per sku per location: `(on_hand, reserved, committed)`, or no row.
    rows: Vec<Vec<Option<(i64, i64, i64)>>>,
}

impl Shelf {
    fn book(&self) -> StockBook {
        let mut rows = Vec::new();
        for (i, per_location) in self.rows.iter().enumerate() {
            for (j, row) in per_location.iter().enumerate() {
                if let Some((on_hand, reserved, committed)) = *row {
                    rows.push(((sku(i), location(j)), Levels { on_hand, reserved, committed, safety_stock: 0 }));
                }
            }
        }
        StockBook::new(rows)
    }

    /// What a line of this sku can draw, everywhere: the positive availability of its rows.
    fn offered(&self, i: usize) -> i64 {
        self.rows[i].iter().flatten().map(|(h, r, c)| (h - r - c).max(0)).sum()
    }

    fn keys(&self) -> BTreeSet<Key> {
        (0..self.rows.len()).flat_map(|i| (0..self.priorities.len()).map(move |j| (sku(i), location(j)))).collect()
    }
}

fn shelves(skus: std::ops::RangeInclusive<usize>, promised: i64) -> impl Strategy<Value = Shelf> {
    (1..=4usize, skus)
        .prop_flat_map(move |(locations, skus)| {
            let row = option::weighted(0.85, (0..=10i64, 0..=promised, 0..=promised));
            (vec(0..5i64, locations), vec(vec(row, locations), skus))
        })
        .prop_map(|(priorities, rows)| Shelf { priorities, rows })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_operations_keeps_the_invariants(setup in setups(), ops in vec(ops(), 0..=60)) {
        let mut ids = counter();
        let mut world = World::open(&setup, &mut ids)?;
        check(&world)?;
        for op in &ops {
            step(&mut world, op, &mut ids)?;
            check(&world)?;
        }
    }

    #[test]
    fn a_hold_without_locations_drains_locations_in_priority_order_and_sums_to_the_request(
        shelf in shelves(1..=3, 4),
        fractions in vec(1..=100i64, 3),
    ) {
        let locations = by_priority(&shelf.priorities);
        let rank = |l: &Location| locations.iter().position(|x| x == l).expect("a known location");
        let lines: Vec<HoldLine> = (0..shelf.rows.len())
            .filter(|i| shelf.offered(*i) > 0)
            .map(|i| HoldLine {
                sku: sku(i),
                quantity: qty((shelf.offered(i) * fractions[i] / 100).max(1)),
                location: None,
            })
            .collect();
        prop_assume!(!lines.is_empty());
        let before = shelf.book();
        let mut book = before.clone();
        let request = HoldRequest { lines: lines.clone(), ttl: Ttl::default(), reference: None };
        let reservation = hold(&mut book, &locations, &request, ReservationId::parse("r-1").unwrap(), start(), &mut counter());
        prop_assert!(reservation.is_ok(), "{:?}", reservation);
        let reservation = reservation.unwrap();

        prop_assert_eq!(reservation.lines.len(), lines.len());
        let mut drawn = BTreeMap::new();
        for (line, asked) in reservation.lines.iter().zip(&lines) {
            prop_assert_eq!(&line.sku, &asked.sku);
            prop_assert_eq!(line.quantity, asked.quantity.get());
            prop_assert_eq!(line.allocations.iter().map(|a| a.quantity).sum::<i64>(), asked.quantity.get());
            // Lower priority number first, each location at most once.
            let ranks: Vec<usize> = line.allocations.iter().map(|a| rank(&a.location)).collect();
            prop_assert!(ranks.windows(2).all(|w| w[0] < w[1]), "out of priority order: {:?}", ranks);
            // Greedy: every stocked location up to the last one drawn from gives all it has; the last may give less.
            let last = *ranks.last().expect("at least one allocation");
            let mut allocations = line.allocations.iter().peekable();
            for l in &locations[..=last] {
                let available = before.levels(&line.sku, l).available();
                let stocked = before.locations_of(&line.sku).any(|x| x == l);
                if !stocked || available <= 0 {
                    prop_assert!(allocations.peek().is_none_or(|a| &a.location != l), "drew from {} with nothing to give", l);
                    continue;
                }
                let a = allocations.next();
                prop_assert!(a.is_some_and(|a| &a.location == l), "skipped {} with {} available", l, available);
                let a = a.unwrap();
                if rank(l) < last {
                    prop_assert_eq!(a.quantity, available, "{} not drained", l);
                } else {
                    prop_assert!(a.quantity > 0 && a.quantity <= available);
                }
                drawn.insert((line.sku.clone(), l.clone()), a.quantity);
            }
            prop_assert!(allocations.next().is_none());
        }
        // Exactly the allocations are reserved; nothing else moved.
        for (s, l) in &shelf.keys() {
            let was = before.levels(s, l);
            let is = book.levels(s, l);
            let taken = drawn.get(&(s.clone(), l.clone())).copied().unwrap_or(0);
            prop_assert_eq!(is, Levels { reserved: was.reserved + taken, ..was });
        }
        prop_assert_eq!(book.movements().len(), drawn.len());
    }

    #[test]
    fn a_multi_line_hold_with_a_short_line_is_refused_listing_exactly_the_short_lines_and_holds_nothing(
        shelf in shelves(2..=3, 3),
        quantities in vec(1..=30i64, 3),
    ) {
        let locations = by_priority(&shelf.priorities);
        let skus = shelf.rows.len();
        let lines: Vec<HoldLine> =
            (0..skus).map(|i| HoldLine { sku: sku(i), quantity: qty(quantities[i]), location: None }).collect();
        let short: Vec<Shortfall> = (0..skus)
            .filter(|i| shelf.offered(*i) < quantities[*i])
            .map(|i| Shortfall { sku: sku(i), requested: quantities[i], available: shelf.offered(i) })
            .collect();
        let before = shelf.book();
        let mut book = before.clone();
        let request = HoldRequest { lines, ttl: Ttl::default(), reference: None };
        let result = hold(&mut book, &locations, &request, ReservationId::parse("r-1").unwrap(), start(), &mut counter());
        if short.is_empty() {
            prop_assert!(result.is_ok(), "{:?}", result);
            let reservation = result.unwrap();
            for (line, q) in reservation.lines.iter().zip(&quantities) {
                prop_assert_eq!(line.allocations.iter().map(|a| a.quantity).sum::<i64>(), *q);
            }
        } else {
            prop_assert_eq!(result, Err(Refusal::InsufficientStock { shortfalls: short }));
            assert_untouched(&before, &book, &shelf.keys())?;
        }
    }

    #[test]
    fn committing_part_of_a_hold_sells_that_much_and_releases_the_rest(
        shelf in shelves(1..=3, 2),
        sizes in vec(1..=100i64, 3),
        sold in vec(option::weighted(0.7, 1..=100i64), 3),
        after_seconds in 0..900i64,
    ) {
        let locations = by_priority(&shelf.priorities);
        let held: Vec<(usize, i64)> = (0..shelf.rows.len())
            .filter(|i| shelf.offered(*i) > 0)
            .map(|i| (i, (shelf.offered(i) * sizes[i] / 100).max(1)))
            .collect();
        let selling: Vec<(usize, i64)> =
            held.iter().filter_map(|(i, n)| sold[*i].map(|f| (*i, (n * f / 100).max(1)))).collect();
        prop_assume!(!selling.is_empty());
        let opening = shelf.book();
        let mut book = opening.clone();
        let request = HoldRequest {
            lines: held.iter().map(|(i, n)| HoldLine { sku: sku(*i), quantity: qty(*n), location: None }).collect(),
            ttl: Ttl::default(),
            reference: None,
        };
        let mut ids = counter();
        let reservation = hold(&mut book, &locations, &request, ReservationId::parse("r-1").unwrap(), start(), &mut ids);
        prop_assert!(reservation.is_ok(), "{:?}", reservation);
        let mut reservation = reservation.unwrap();

        let held_book = book.snapshot();
        let mut book = held_book.clone();
        let now = start() + Duration::seconds(after_seconds);
        let lines: Vec<CommitLine> = selling.iter().map(|(i, k)| CommitLine { sku: sku(*i), quantity: qty(*k) }).collect();
        let committed = reservation.commit(Some(&lines), &mut book, now, &mut ids);
        prop_assert_eq!(committed, Ok(()));
        prop_assert_eq!(reservation.status, ReservationStatus::Committed);
        prop_assert_eq!(reservation.status_at(now), ReservationStatus::Committed);

        for (i, n) in &held {
            let s = sku(*i);
            let k = selling.iter().find(|(j, _)| j == i).map_or(0, |(_, k)| *k);
            let line = reservation.lines.iter().find(|l| l.sku == s).expect("the line is held");
            // Sold units come out of the allocations in sourcing order.
            let mut to_sell = k;
            for a in &line.allocations {
                let expected = to_sell.min(a.quantity);
                to_sell -= expected;
                prop_assert_eq!(a.committed, expected);
                let state = if expected > 0 { ReservationStatus::Committed } else { ReservationStatus::Released };
                prop_assert_eq!(a.state, state);
                let was = held_book.levels(&s, &a.location);
                let is = book.levels(&s, &a.location);
                prop_assert_eq!(is.committed - was.committed, expected);
                prop_assert_eq!(is.reserved - was.reserved, -a.quantity);
                prop_assert_eq!(is.on_hand, was.on_hand);
            }
            // Over the rows involved: committed += k, reserved -= n.
            let delta = |f: fn(&Levels) -> i64| -> i64 {
                line.allocations.iter().map(|a| f(&book.levels(&s, &a.location)) - f(&held_book.levels(&s, &a.location))).sum()
            };
            prop_assert_eq!(delta(|l| l.committed), k);
            prop_assert_eq!(delta(|l| l.reserved), -n);
        }

        // Shipping it takes exactly the sold units out of on_hand, and leaves each sku k units less available
        // than before the hold.
        let shipped_from = book.snapshot();
        let mut book = shipped_from.clone();
        prop_assert_eq!(reservation.fulfil(&mut book, now, &mut ids), Ok(()));
        for (i, _) in &held {
            let k = selling.iter().find(|(j, _)| j == i).map_or(0, |(_, k)| *k);
            let total = |b: &StockBook, f: fn(&Levels) -> i64| -> i64 {
                locations.iter().map(|l| f(&b.levels(&sku(*i), l))).sum()
            };
            prop_assert_eq!(total(&book, |l| l.on_hand), total(&opening, |l| l.on_hand) - k);
            prop_assert_eq!(total(&book, |l| l.committed), total(&opening, |l| l.committed));
            prop_assert_eq!(total(&book, |l| l.reserved), total(&opening, |l| l.reserved));
        }
    }

    #[test]
    fn status_at_is_expired_exactly_when_a_stored_hold_has_lapsed(
        ttl_seconds in 1..=86_400i64,
        action in 0..6u8,
        acted_at in 0..=2u8,
        read_at in 0..=2u8,
        nudge in -1..=1i64,
    ) {
        // Times around the expiry: before it, exactly at it, after it, each nudged by a second.
        let moment = |which: u8| -> i64 {
            let base = match which { 0 => ttl_seconds / 2, 1 => ttl_seconds, _ => ttl_seconds * 2 };
            (base + nudge).max(0)
        };
        let (acted, read) = (moment(acted_at), moment(read_at));
        let locations = vec![location(0), location(1)];
        let rows = [((sku(0), location(0)), Levels { on_hand: 3, ..Levels::default() }),
                    ((sku(0), location(1)), Levels { on_hand: 5, ..Levels::default() })];
        let mut book = StockBook::new(rows);
        let mut ids = counter();
        let request = HoldRequest {
            lines: vec![HoldLine { sku: sku(0), quantity: qty(6), location: None }],
            ttl: Ttl::seconds(ttl_seconds).unwrap(),
            reference: None,
        };
        let reservation = hold(&mut book, &locations, &request, ReservationId::parse("r-1").unwrap(), start(), &mut ids);
        prop_assert!(reservation.is_ok());
        let mut reservation = reservation.unwrap();
        prop_assert_eq!(reservation.expires_at, start() + Duration::seconds(ttl_seconds));

        let at = start() + Duration::seconds(acted);
        let lapsed_when_acting = acted >= ttl_seconds;
        let mut book = book.snapshot();
        // What the stored status should be after the action, and whether an allocation was booked expired.
        let (stored, allocation_expired) = match action {
            0 => (ReservationStatus::Held, false),
            1 => {
                let r = reservation.commit(None, &mut book, at, &mut ids);
                prop_assert_eq!(r.is_ok(), !lapsed_when_acting);
                (if lapsed_when_acting { ReservationStatus::Held } else { ReservationStatus::Committed }, false)
            }
            2 => {
                prop_assert_eq!(reservation.release(&mut book, at, &mut ids), Ok(()));
                (if lapsed_when_acting { ReservationStatus::Expired } else { ReservationStatus::Released }, false)
            }
            3 => {
                prop_assert_eq!(reservation.expire(&mut book, at, &mut ids), Ok(()));
                (if lapsed_when_acting { ReservationStatus::Expired } else { ReservationStatus::Held }, false)
            }
            4 => {
                let sold = reservation.commit(None, &mut book, at, &mut ids).and_then(|()| reservation.fulfil(&mut book, at, &mut ids));
                prop_assert_eq!(sold.is_ok(), !lapsed_when_acting);
                (if lapsed_when_acting { ReservationStatus::Held } else { ReservationStatus::Fulfilled }, false)
            }
            _ => {
                // A hold elsewhere books one lapsed allocation, as the store does once the expiry has passed.
                if lapsed_when_acting {
                    let a = &mut reservation.lines[0].allocations[0];
                    let lapsed = [LapsedAllocation {
                        reservation_id: reservation.id.clone(),
                        sku: sku(0),
                        location: a.location.clone(),
                        quantity: a.quantity,
                        reference: None,
                    }];
                    prop_assert_eq!(expire_lapsed(&mut book, &lapsed, at, &mut ids), Ok(()));
                    a.state = ReservationStatus::Expired;
                }
                (ReservationStatus::Held, lapsed_when_acting)
            }
        };
        prop_assert_eq!(reservation.status, stored);

        let now = start() + Duration::seconds(read);
        let expired = stored == ReservationStatus::Held && (read >= ttl_seconds || allocation_expired);
        let seen = reservation.status_at(now);
        prop_assert_eq!(seen == ReservationStatus::Expired, expired || stored == ReservationStatus::Expired);
        prop_assert_eq!(seen, if expired { ReservationStatus::Expired } else { stored });
    }
}
