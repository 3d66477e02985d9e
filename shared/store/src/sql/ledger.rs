//! One command, start to finish: lock the rows it touches in key order, hand the state to the domain with
//! `now`, write levels, movements, outbox and the idempotency answer together.
//!
//! Each call opens its own (sub)transaction with [`Conn::begin`]: a real transaction on PostgreSQL and Spanner,
//! a savepoint inside SQLite's batch transaction.

use std::collections::{BTreeMap, BTreeSet};

use stockroom_domain::{
    Allocation, Change, ChangeOp, LapsedAllocation, Levels, Location, Refusal, Reservation, ReservationId,
    ReservationLine, ReservationStatus, Sku, StockBook, Timestamp,
};

use crate::error::StoreError;
use crate::event::{movement_event, refused_event};
use crate::model::{Command, Delivery, Idempotency, ReservationView, StockFigures};
use crate::outcome::{Answer, Effect, LevelRow, Outcome};
use crate::sql::{Conn, PARAMS_MAX, Query, Row, list, query, queues};
use crate::store::Ctx;

/// Columns of one movement row: movements per INSERT are cut to fit [`PARAMS_MAX`].
const MOVEMENT_COLUMNS: usize = 11;

pub(crate) enum Claim {
    Claimed(String),
    Replay(Answer),
    Mismatch,
    InProgress,
}

/// Takes the idempotency key for this request, or says why not. A claim older than `lease_seconds` belongs to an
/// attempt that died (or is very slow) and may be taken over. Taking over is always safe: the answer is stored
/// only by the holder of the current claim, in the effect's own transaction, so a slow first attempt that lost
/// its claim rolls its effect back (see `execute`).
pub(crate) async fn claim(
    c: &mut dyn Conn,
    idem: &Idempotency,
    token: &str,
    lease_seconds: i64,
    now: Timestamp,
) -> Result<Claim, StoreError> {
    c.begin().await?;
    let outcome = take(c, idem, token, lease_seconds, now).await?;
    c.commit().await?;
    Ok(outcome)
}

/// [`claim`] inside the caller's transaction. Where the effect's own transaction takes the key, an attempt that
/// fails or dies leaves nothing behind: its retry finds the key free at once. A concurrent attempt with the same
/// key waits on the row (PostgreSQL), queues behind it (SQLite) or is aborted and run again (Spanner), and then
/// finds the first one's answer.
async fn take(
    c: &mut dyn Conn,
    idem: &Idempotency,
    token: &str,
    lease_seconds: i64,
    now: Timestamp,
) -> Result<Claim, StoreError> {
    let now = now.timestamp_micros();
    let stale_before = now - lease_seconds * 1_000_000;
    let inserted = c
        .execute(
            query(
                "INSERT INTO idempotency (key, request_hash, state, claim, claimed_at, status, body, created_at, updated_at) \
                 VALUES ($1, $2, 'in_flight', $3, $4, NULL, NULL, $4, $4) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(token)
            .bind(now),
        )
        .await?;
    let outcome = if inserted == 1 {
        Claim::Claimed(token.to_owned())
    } else {
        let row = c
            .fetch_one(
                query("SELECT request_hash, state, claim, claimed_at, status, body FROM idempotency WHERE key = $1")
                    .bind(&idem.key),
            )
            .await?;
        let hash = row.text(0)?;
        let state = row.text(1)?;
        if hash != idem.request_hash {
            Claim::Mismatch
        } else if state == "done" {
            let status = row.opt_int(4)?;
            let body = row.opt_text(5)?;
            let body = serde_json::from_str(body.as_deref().unwrap_or("null"))
                .map_err(|e| StoreError::Corrupt(format!("stored answer for {}: {e}", idem.key)))?;
            let status = u16::try_from(status.unwrap_or(500)).unwrap_or(500);
            Claim::Replay(Answer { status, body })
        } else {
            let held_by = row.text(2)?;
            let claimed_at = row.int(3)?;
            if claimed_at > stale_before {
                Claim::InProgress
            } else {
                // The earlier attempt died holding the claim: take it over, unless someone else just did.
                let taken = c
                    .execute(
                        query(
                            "UPDATE idempotency SET claim = $1, claimed_at = $2, updated_at = $2 \
                             WHERE key = $3 AND state = 'in_flight' AND claim = $4",
                        )
                        .bind(token)
                        .bind(now)
                        .bind(&idem.key)
                        .bind(held_by),
                    )
                    .await?;
                if taken == 1 { Claim::Claimed(token.to_owned()) } else { Claim::InProgress }
            }
        }
    };
    Ok(outcome)
}

/// Gives a claim back after a failed attempt, so that a retry need not wait for the lease.
pub(crate) async fn unclaim(c: &mut dyn Conn, key: &str, token: &str) -> Result<(), StoreError> {
    c.begin().await?;
    c.execute(
        query("DELETE FROM idempotency WHERE key = $1 AND claim = $2 AND state = 'in_flight'").bind(key).bind(token),
    )
    .await?;
    c.commit().await
}

/// Stores an answer for work whose effects were committed on their own (the expiry job: booking a lapsed hold
/// twice is a no-op, so the summary need not share their transaction).
pub(crate) async fn finish_alone(
    c: &mut dyn Conn,
    key: &str,
    token: &str,
    answer: &Answer,
    now: Timestamp,
) -> Result<(), StoreError> {
    c.begin().await?;
    finish(c, key, token, answer, now).await?;
    c.commit().await
}

async fn finish(c: &mut dyn Conn, key: &str, token: &str, answer: &Answer, now: Timestamp) -> Result<bool, StoreError> {
    let body = serde_json::to_string(&answer.body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let done = c
        .execute(
            query(
                "UPDATE idempotency SET state = 'done', status = $1, body = $2, updated_at = $3 \
                 WHERE key = $4 AND claim = $5 AND state = 'in_flight'",
            )
            .bind(i64::from(answer.status))
            .bind(body)
            .bind(now)
            .bind(key)
            .bind(token),
        )
        .await?;
    Ok(done == 1)
}

/// Runs a command in its own (sub)transaction; with a claim, stores the rendered answer in the same
/// transaction.
pub(crate) async fn execute(
    c: &mut dyn Conn,
    ctx: &Ctx,
    command: &Command,
    claim: Option<(&Idempotency, &str, i64)>,
    delivery: Option<&Delivery>,
) -> Result<Outcome, StoreError> {
    let now = ctx.clock.now();
    c.begin().await?;
    // The key is taken in the effect's transaction: if it rolls back, or the process dies, so does the claim.
    if let Some(known) = take_in_tx(c, claim, now).await? {
        return Ok(known);
    }
    let outcome = match run(c, ctx, command, now).await? {
        Ok(effect) => Outcome::Done(effect),
        Err(refusal) => {
            // A refusal changes nothing: drop whatever the attempt wrote (the claim too), keep only the answer.
            c.rollback().await?;
            c.begin().await?;
            if let Some(known) = take_in_tx(c, claim, now).await? {
                return Ok(known);
            }
            if let Some(delivery) = delivery {
                if let Some(why) = early(c, command, &refusal).await? {
                    // Not an answer to store: the sender must come back once the predecessor is here.
                    c.rollback().await?;
                    return Err(StoreError::NotYet(why));
                }
                write_refused_event(c, ctx, command, delivery, &refusal, now).await?;
            }
            Outcome::Refused(refusal)
        }
    };
    if let Some((idem, token, _)) = claim
        && !finish(c, &idem.key, token, &(ctx.render)(&outcome), now).await?
    {
        // Our claim was taken over (we outlived the lease): the other attempt's answer is the one that counts.
        c.rollback().await?;
        return Ok(Outcome::InProgress);
    }
    c.commit().await?;
    Ok(outcome)
}

/// Takes the key, if any, in the open transaction; the known outcome (after rolling back) when it is not ours.
async fn take_in_tx(
    c: &mut dyn Conn,
    claim: Option<(&Idempotency, &str, i64)>,
    now: Timestamp,
) -> Result<Option<Outcome>, StoreError> {
    let Some((idem, token, lease_seconds)) = claim else {
        return Ok(None);
    };
    let known = match take(c, idem, token, lease_seconds, now).await? {
        Claim::Claimed(_) => return Ok(None),
        Claim::Replay(answer) => Outcome::Replayed(answer),
        Claim::Mismatch => Outcome::Mismatch,
        Claim::InProgress => Outcome::InProgress,
    };
    c.rollback().await?;
    Ok(Some(known))
}

/// For a command that came as an event, whether its refusal only means "too early": the reservation it names
/// was never placed nor refused yet, or it is to be shipped while still only held. Events arrive out of order;
/// the later delivery will find its predecessor.
async fn early(c: &mut dyn Conn, command: &Command, refusal: &Refusal) -> Result<Option<String>, StoreError> {
    let id = match command {
        Command::Commit { id, .. } | Command::Fulfil { id } | Command::Release { id } => id,
        _ => return Ok(None),
    };
    if let Refusal::UnknownReservation { .. } = refusal {
        // A hold that was answered (refused) under this reservation id will never come: that refusal stands.
        let answered = c
            .fetch_optional(
                query("SELECT 1 FROM idempotency WHERE key = $1 AND state = 'done'").bind(format!("reservation:{id}")),
            )
            .await?
            .is_some();
        // Unless the hold was placed after this command looked (between its transaction and this one): then it is
        // here now, and the next delivery will find it.
        let placed_since = answered && reservation_exists(c, id).await?;
        return Ok((!answered || placed_since).then(|| format!("reservation {id} is not known yet")));
    }
    let shipping_a_hold =
        matches!(refusal, Refusal::InvalidState { status: ReservationStatus::Held, action: "fulfil", .. });
    Ok(shipping_a_hold.then(|| format!("reservation {id} is not committed yet")))
}

/// The ordering key of what a command is about: its reservation, else its first sku.
fn subject(command: &Command) -> String {
    match command {
        Command::Adjust { changes, .. } => changes.first().map(|c| c.sku.to_string()).unwrap_or_default(),
        Command::SetFromExternal { sku, .. } => sku.to_string(),
        Command::Hold { id, .. }
        | Command::Sell { id, .. }
        | Command::Commit { id, .. }
        | Command::Fulfil { id }
        | Command::Release { id }
        | Command::Expire { id } => id.to_string(),
    }
}

async fn write_refused_event(
    c: &mut dyn Conn,
    ctx: &Ctx,
    command: &Command,
    delivery: &Delivery,
    refusal: &Refusal,
    now: Timestamp,
) -> Result<(), StoreError> {
    let id = ctx.ids.next_id();
    // The event tells the refusal as a client would have been told it.
    let answer = (ctx.render)(&Outcome::Refused(refusal.clone()));
    let subject = subject(command);
    let reservation_id = match command {
        Command::Adjust { .. } | Command::SetFromExternal { .. } => None,
        _ => Some(subject.clone()),
    };
    let event = refused_event(&id, &subject, delivery, reservation_id, &answer.body, now);
    c.execute(queues::outbox_row(&id, &subject, now, &event)).await?;
    Ok(())
}

/// A command's effect, or the refusal that leaves the transaction to be rolled back.
type Decided = Result<Result<Effect, Refusal>, StoreError>;

async fn run(c: &mut dyn Conn, ctx: &Ctx, command: &Command, now: Timestamp) -> Decided {
    let origin = command.origin();
    let mut ids = || ctx.ids.next_id();
    match command {
        Command::Adjust { changes, cause } => {
            let known: BTreeSet<Location> = locations(c).await?.into_iter().collect();
            let keys: BTreeSet<(Sku, Location)> = changes
                .iter()
                .filter(|ch| known.contains(&ch.location))
                .map(|ch| (ch.sku.clone(), ch.location.clone()))
                .collect();
            ensure_levels(c, &keys, now).await?;
            let skus: BTreeSet<Sku> = keys.iter().map(|(s, _)| s.clone()).collect();
            let before = lock_levels(c, &skus).await?;
            let mut book = before.clone();
            if let Err(r) = stockroom_domain::adjust(&mut book, &known, changes, cause, now, &mut ids) {
                return Ok(Err(r));
            }
            write_book(c, &before, &book, origin, now).await?;
            let rows = keys.iter().map(|(s, l)| level_row(&book, s, l)).collect();
            Ok(Ok(Effect::Levels { rows, stale: None }))
        }
        Command::Hold { id, request } => hold(c, ctx, id, request, false, now).await,
        Command::Sell { id, request } => hold(c, ctx, id, request, true, now).await,
        Command::SetFromExternal { sku, location, on_hand, system, observed_at, reference } => {
            let known: BTreeSet<Location> = locations(c).await?.into_iter().collect();
            if !known.contains(location) {
                return Ok(Err(Refusal::UnknownLocation { location: location.clone() }));
            }
            let key = (sku.clone(), location.clone());
            ensure_levels(c, &BTreeSet::from([key.clone()]), now).await?;
            let before = lock_levels(c, &BTreeSet::from([sku.clone()])).await?;
            let last = c
                .fetch_optional(
                    query("SELECT observed_at FROM external_counts WHERE sku = $1 AND location = $2 AND system = $3")
                        .bind(sku.as_str())
                        .bind(location.as_str())
                        .bind(system.as_str()),
                )
                .await?
                .map(|r| r.int(0))
                .transpose()?;
            let stale = last.is_some_and(|at| at >= observed_at.timestamp_micros());
            let mut book = before.clone();
            if !stale {
                let change = Change {
                    sku: sku.clone(),
                    location: location.clone(),
                    op: ChangeOp::Set(*on_hand),
                    reason: format!("external:{system}"),
                    reference: reference.clone(),
                    expected_on_hand: None,
                };
                let cause = format!("external:{system}");
                if let Err(r) = stockroom_domain::adjust(&mut book, &known, &[change], &cause, now, &mut ids) {
                    return Ok(Err(r));
                }
                write_book(c, &before, &book, origin, now).await?;
                let sql = if last.is_some() {
                    "UPDATE external_counts SET observed_at = $4 WHERE sku = $1 AND location = $2 AND system = $3"
                } else {
                    "INSERT INTO external_counts (sku, location, system, observed_at) VALUES ($1, $2, $3, $4)"
                };
                c.execute(
                    query(sql).bind(sku.as_str()).bind(location.as_str()).bind(system.as_str()).bind(*observed_at),
                )
                .await?;
            }
            Ok(Ok(Effect::Levels { rows: vec![level_row(&book, sku, location)], stale: Some(stale) }))
        }
        Command::Commit { id, .. } | Command::Fulfil { id } | Command::Release { id } | Command::Expire { id } => {
            let unknown = || Ok(Err(Refusal::UnknownReservation { reservation_id: id.clone() }));
            let Some(peek) = load_reservation(c, id, false).await? else {
                return unknown();
            };
            // Level rows first, in key order, then the reservation: the order every writer takes.
            let skus: BTreeSet<Sku> = peek.keys().into_iter().map(|(s, _)| s).collect();
            let before = lock_levels(c, &skus).await?;
            let Some(mut reservation) = load_reservation(c, id, true).await? else {
                return unknown();
            };
            let mut book = before.clone();
            let stored = reservation.clone();
            let result = match command {
                Command::Commit { lines, .. } => reservation.commit(lines.as_deref(), &mut book, now, &mut ids),
                Command::Fulfil { .. } => reservation.fulfil(&mut book, now, &mut ids),
                Command::Release { .. } => reservation.release(&mut book, now, &mut ids),
                _ => reservation.expire(&mut book, now, &mut ids),
            };
            if let Err(r) = result {
                return Ok(Err(r));
            }
            if reservation != stored {
                write_book(c, &before, &book, origin, now).await?;
                update_reservation(c, &reservation).await?;
            }
            Ok(Ok(Effect::Reservation { view: ReservationView::of(&reservation, now), created: false }))
        }
    }
}

/// Places a hold (or, `sell`, a hold committed at once) on every line or none.
async fn hold(
    c: &mut dyn Conn,
    ctx: &Ctx,
    id: &ReservationId,
    request: &stockroom_domain::HoldRequest,
    sell: bool,
    now: Timestamp,
) -> Decided {
    let origin = if sell { "stock-updates" } else { "reservations" };
    let mut ids = || ctx.ids.next_id();
    let skus: BTreeSet<Sku> = request.lines.iter().map(|l| l.sku.clone()).collect();
    let mut before = lock_levels(c, &skus).await?;
    let exists = || Ok(Err(Refusal::ReservationExists { reservation_id: id.clone() }));
    if reservation_exists(c, id).await? {
        return exists();
    }
    // Holds that lapsed on these rows give their units back first, booked, so that a late commit of
    // theirs sees them gone.
    let lapsed = lapsed_allocations(c, &skus, now).await?;
    if !lapsed.is_empty() {
        let mut book = before.clone();
        stockroom_domain::expire_lapsed(&mut book, &lapsed, now, &mut ids).map_err(corrupt)?;
        write_book(c, &before, &book, origin, now).await?;
        mark_expired(c, &lapsed).await?;
        before = book.snapshot();
    }
    let locations = locations(c).await?;
    let mut book = before.clone();
    let mut reservation = match stockroom_domain::hold(&mut book, &locations, request, id.clone(), now, &mut ids) {
        Err(r) => return Ok(Err(r)),
        Ok(reservation) => reservation,
    };
    if sell && let Err(r) = reservation.commit(None, &mut book, now, &mut ids) {
        return Ok(Err(r));
    }
    write_book(c, &before, &book, origin, now).await?;
    match insert_reservation(c, &reservation).await {
        // The same id placed at this moment through another key, on other rows.
        Err(StoreError::Duplicate(_)) => return exists(),
        other => other?,
    }
    Ok(Ok(Effect::Reservation { view: ReservationView::of(&reservation, now), created: true }))
}

fn level_row(book: &StockBook, sku: &Sku, location: &Location) -> LevelRow {
    LevelRow { sku: sku.clone(), location: location.clone(), figures: StockFigures::from(book.levels(sku, location)) }
}

fn corrupt(r: Refusal) -> StoreError {
    StoreError::Corrupt(format!("booking lapsed holds: {r}"))
}

pub(crate) async fn locations(c: &mut dyn Conn) -> Result<Vec<Location>, StoreError> {
    let rows = c.fetch_all(query("SELECT id FROM locations ORDER BY priority, id")).await?;
    rows.iter().map(|r| r.parsed(0, Location::parse)).collect()
}

/// Creates zero rows for (sku, location) pairs that have none yet, so that they can be locked.
async fn ensure_levels(c: &mut dyn Conn, keys: &BTreeSet<(Sku, Location)>, now: Timestamp) -> Result<(), StoreError> {
    let inserts = keys
        .iter()
        .map(|(sku, location)| {
            query(
                "INSERT INTO levels (sku, location, on_hand, reserved, committed, updated_at) VALUES ($1, $2, 0, 0, 0, $3) \
                 ON CONFLICT (sku, location) DO NOTHING",
            )
            .bind(sku.as_str())
            .bind(location.as_str())
            .bind(now)
        })
        .collect();
    c.execute_all(inserts).await?;
    Ok(())
}

/// Every level row of these skus, locked (where the dialect locks reads) in key order, with the sku's safety
/// stock.
pub(crate) async fn lock_levels(c: &mut dyn Conn, skus: &BTreeSet<Sku>) -> Result<StockBook, StoreError> {
    if skus.is_empty() {
        return Ok(StockBook::default());
    }
    let sql = format!(
        "SELECT l.sku, l.location, l.on_hand, l.reserved, l.committed, \
         COALESCE((SELECT p.safety_stock FROM sku_policies p WHERE p.sku = l.sku), 0) \
         FROM levels l WHERE l.sku IN ({}) ORDER BY l.sku, l.location{}",
        list(1, skus.len()),
        c.dialect().for_update()
    );
    let rows = c.fetch_all(query(sql).bind_all(skus.iter().map(Sku::as_str))).await?;
    let mut levels = Vec::with_capacity(rows.len());
    for r in &rows {
        let key = (r.parsed(0, Sku::parse)?, r.parsed(1, Location::parse)?);
        let l = Levels { on_hand: r.int(2)?, reserved: r.int(3)?, committed: r.int(4)?, safety_stock: r.int(5)? };
        levels.push((key, l));
    }
    Ok(StockBook::new(levels))
}

/// Writes what a decision changed: the new figures of each touched row, its movements and their outbox events,
/// in as few round trips as the backend allows.
async fn write_book(
    c: &mut dyn Conn,
    before: &StockBook,
    book: &StockBook,
    origin: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut writes = Vec::new();
    for ((sku, location), l) in book.changed() {
        writes.push(
            query("UPDATE levels SET on_hand = $1, reserved = $2, committed = $3, updated_at = $4 WHERE sku = $5 AND location = $6")
                .bind(l.on_hand)
                .bind(l.reserved)
                .bind(l.committed)
                .bind(now)
                .bind(sku.as_str())
                .bind(location.as_str()),
        );
    }
    // Each event carries the figures right after its own movement.
    let mut running: BTreeMap<(Sku, Location), Levels> = BTreeMap::new();
    let mut events = Vec::with_capacity(book.movements().len());
    for m in book.movements() {
        let key = (m.sku.clone(), m.location.clone());
        let current = running.get(&key).copied().unwrap_or_else(|| before.levels(&m.sku, &m.location));
        let after = current.apply(&m.deltas).map_err(corrupt)?;
        running.insert(key, after);
        events.push(movement_event(m, origin, &after)?.to_string());
    }
    let rows_max = PARAMS_MAX / MOVEMENT_COLUMNS;
    for (chunk, events) in book.movements().chunks(rows_max).zip(events.chunks(rows_max)) {
        let values: Vec<String> =
            (0..chunk.len()).map(|i| format!("({})", list(i * MOVEMENT_COLUMNS + 1, MOVEMENT_COLUMNS))).collect();
        let mut q = query(format!(
            "INSERT INTO movements (id, at, sku, location, kind, on_hand_delta, reserved_delta, committed_delta, reason, reference, cause) VALUES {}",
            values.join(", ")
        ));
        for m in chunk {
            q = q
                .bind(m.id.as_str())
                .bind(m.at)
                .bind(m.sku.as_str())
                .bind(m.location.as_str())
                .bind(m.kind.as_str())
                .bind(m.deltas.on_hand)
                .bind(m.deltas.reserved)
                .bind(m.deltas.committed)
                .bind(m.reason.as_str())
                .bind(m.reference.as_deref())
                .bind(m.cause.as_deref());
        }
        writes.push(q);

        let values: Vec<String> = (0..chunk.len()).map(|i| format!("({}, NULL)", list(i * 4 + 1, 4))).collect();
        let mut q = query(format!(
            "INSERT INTO outbox (id, sku, created_at, event, published_at) VALUES {}",
            values.join(", ")
        ));
        for (m, e) in chunk.iter().zip(events) {
            q = q.bind(m.id.as_str()).bind(m.sku.as_str()).bind(now).bind(e.as_str());
        }
        writes.push(q);
    }
    c.execute_all(writes).await?;
    Ok(())
}

async fn reservation_exists(c: &mut dyn Conn, id: &ReservationId) -> Result<bool, StoreError> {
    Ok(c.fetch_optional(query("SELECT 1 FROM reservations WHERE id = $1").bind(id.as_str())).await?.is_some())
}

async fn lapsed_allocations(
    c: &mut dyn Conn,
    skus: &BTreeSet<Sku>,
    now: Timestamp,
) -> Result<Vec<LapsedAllocation>, StoreError> {
    let rows = c.fetch_all(lapsed_allocations_query(skus, now, "")).await?;
    rows.iter()
        .map(|r| {
            Ok(LapsedAllocation {
                reservation_id: r.parsed(0, ReservationId::parse)?,
                sku: r.parsed(1, Sku::parse)?,
                location: r.parsed(2, Location::parse)?,
                quantity: r.int(3)?,
                reference: r.opt_text(4)?,
            })
        })
        .collect()
}

/// The held allocations of `skus` whose hold ran out by `now`, behind `prefix` (empty, or an `EXPLAIN`).
/// `allocations_held` (sku, state, expires_at) bounds the read by the lapsed rows alone, however many live holds
/// the SKUs carry.
pub(crate) fn lapsed_allocations_query(skus: &BTreeSet<Sku>, now: Timestamp, prefix: &str) -> Query {
    let sql = format!(
        "{prefix}SELECT reservation_id, sku, location, quantity, reference FROM allocations \
         WHERE sku IN ({}) AND state = 'held' AND expires_at <= ${} ORDER BY reservation_id, line_no, alloc_no",
        list(1, skus.len()),
        skus.len() + 1
    );
    query(sql).bind_all(skus.iter().map(Sku::as_str)).bind(now)
}

async fn mark_expired(c: &mut dyn Conn, lapsed: &[LapsedAllocation]) -> Result<(), StoreError> {
    let updates = lapsed
        .iter()
        .map(|a| {
            query("UPDATE allocations SET state = 'expired' WHERE reservation_id = $1 AND sku = $2 AND location = $3 AND state = 'held'")
                .bind(a.reservation_id.as_str())
                .bind(a.sku.as_str())
                .bind(a.location.as_str())
        })
        .collect();
    c.execute_all(updates).await?;
    Ok(())
}

pub(crate) async fn load_reservation(
    c: &mut dyn Conn,
    id: &ReservationId,
    lock: bool,
) -> Result<Option<Reservation>, StoreError> {
    let sql = format!(
        "SELECT status, reference, created_at, expires_at, updated_at FROM reservations WHERE id = $1{}",
        if lock { c.dialect().for_update() } else { "" }
    );
    let Some(row) = c.fetch_optional(query(sql).bind(id.as_str())).await? else {
        return Ok(None);
    };
    let status = row.parsed(0, parse_status)?;
    let allocs = c
        .fetch_all(
            query(
                "SELECT line_no, sku, location, line_quantity, quantity, committed, state FROM allocations \
                 WHERE reservation_id = $1 ORDER BY line_no, alloc_no",
            )
            .bind(id.as_str()),
        )
        .await?;
    let mut lines: Vec<ReservationLine> = Vec::new();
    let mut current_line = -1i64;
    for a in &allocs {
        let line_no = a.int(0)?;
        if line_no != current_line {
            current_line = line_no;
            lines.push(ReservationLine { sku: a.parsed(1, Sku::parse)?, quantity: a.int(3)?, allocations: Vec::new() });
        }
        if let Some(line) = lines.last_mut() {
            line.allocations.push(allocation(a)?);
        }
    }
    Ok(Some(Reservation {
        id: id.clone(),
        status,
        reference: row.opt_text(1)?,
        created_at: row.time(2)?,
        expires_at: row.time(3)?,
        updated_at: row.time(4)?,
        lines,
    }))
}

fn allocation(a: &Row) -> Result<Allocation, StoreError> {
    Ok(Allocation {
        location: a.parsed(2, Location::parse)?,
        quantity: a.int(4)?,
        committed: a.int(5)?,
        state: a.parsed(6, parse_status)?,
    })
}

fn parse_status(raw: &str) -> Result<ReservationStatus, String> {
    ReservationStatus::parse(raw).ok_or_else(|| format!("reservation status {raw:?}"))
}

async fn insert_reservation(c: &mut dyn Conn, r: &Reservation) -> Result<(), StoreError> {
    let mut writes = vec![
        query("INSERT INTO reservations (id, status, reference, created_at, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(r.id.as_str())
            .bind(r.status.as_str())
            .bind(r.reference.as_deref())
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.updated_at),
    ];
    for (line_no, line) in r.lines.iter().enumerate() {
        for (alloc_no, a) in line.allocations.iter().enumerate() {
            writes.push(
                query(
                    "INSERT INTO allocations (reservation_id, line_no, alloc_no, sku, location, line_quantity, quantity, committed, state, expires_at, reference) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(r.id.as_str())
                .bind(line_no as i64)
                .bind(alloc_no as i64)
                .bind(line.sku.as_str())
                .bind(a.location.as_str())
                .bind(line.quantity)
                .bind(a.quantity)
                .bind(a.committed)
                .bind(a.state.as_str())
                .bind(r.expires_at)
                .bind(r.reference.as_deref()),
            );
        }
    }
    c.execute_all(writes).await?;
    Ok(())
}

async fn update_reservation(c: &mut dyn Conn, r: &Reservation) -> Result<(), StoreError> {
    let mut writes = vec![
        query("UPDATE reservations SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(r.status.as_str())
            .bind(r.updated_at)
            .bind(r.id.as_str()),
    ];
    for (line_no, line) in r.lines.iter().enumerate() {
        for (alloc_no, a) in line.allocations.iter().enumerate() {
            writes.push(
                query(
                    "UPDATE allocations SET committed = $1, state = $2 WHERE reservation_id = $3 AND line_no = $4 AND alloc_no = $5",
                )
                .bind(a.committed)
                .bind(a.state.as_str())
                .bind(r.id.as_str())
                .bind(line_no as i64)
                .bind(alloc_no as i64),
            );
        }
    }
    c.execute_all(writes).await?;
    Ok(())
}

/// Reservations still stored as held whose expiry has passed, oldest first.
pub(crate) async fn due_reservations(
    c: &mut dyn Conn,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<ReservationId>, StoreError> {
    let rows = c
        .fetch_all(
            query(
                "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
            )
            .bind(now)
            .bind(limit),
        )
        .await?;
    rows.iter().map(|r| r.parsed(0, ReservationId::parse)).collect()
}
