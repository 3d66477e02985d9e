//! Commands that arrive as events — CloudEvents on `/events`, Pub/Sub pushes on `/pubsub/push`, Eventarc's
//! `messagePublished`, and the local command queue — applied exactly once each, through one function.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stockroom_domain::{Change, CommitLine, HoldRequest};
use stockroom_events::command as cmd;
use stockroom_runtime::fields::HoldLineInput;
use stockroom_runtime::{ApiError, fields};
use stockroom_store::{Command, Delivery, Idempotency, Ledger};

pub use stockroom_runtime::events::Envelope;

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid("invalid_command", e.to_string())
}

fn data<T: serde::de::DeserializeOwned>(env: &Envelope) -> Result<T, ApiError> {
    T::deserialize(&env.data).map_err(|e| invalid(format!("{}: {e}", env.ty)))
}

fn quantity(n: i64) -> Result<stockroom_domain::Quantity, ApiError> {
    fields::quantity(&n.into(), "quantity")
}

/// The same checks as `POST /v1/reservations`: both go through `fields::hold_request`.
fn hold_request(h: &cmd::Hold) -> Result<HoldRequest, ApiError> {
    let quantities: Vec<serde_json::Number> = h.lines.iter().map(|l| l.quantity.into()).collect();
    let lines: Vec<HoldLineInput<'_>> = h
        .lines
        .iter()
        .zip(&quantities)
        .map(|(l, quantity)| HoldLineInput { sku: &l.sku, quantity, location: l.location.as_deref() })
        .collect();
    fields::hold_request(&lines, h.ttl_seconds.map(Into::into).as_ref(), h.reference.as_deref())
}

/// The same checks as `POST /v1/adjustments`: the command's change goes through the API's own conversion.
fn change(c: &cmd::Change) -> Result<Change, ApiError> {
    let body = crate::ChangeBody {
        sku: c.sku.clone(),
        location: c.location.clone(),
        delta: c.delta.map(Into::into),
        set: c.set.map(Into::into),
        reason: c.reason.clone(),
        reference: c.reference.clone(),
        expected_on_hand: c.expected_on_hand.map(Into::into),
    };
    Change::try_from(&body)
}

/// The domain command and its idempotency key. A hold's key is its reservation id (however often, and by
/// whichever path, it comes); any other command's is its CloudEvent source and id.
pub fn decode(env: &Envelope) -> Result<(Command, String), ApiError> {
    let by_event = format!("event:{}#{}", env.source, env.id);
    Ok(match env.ty.as_str() {
        cmd::ADJUST => {
            let a: cmd::Adjust = data(env)?;
            if a.changes.is_empty() || a.changes.len() > crate::CHANGES_MAX {
                return Err(ApiError::invalid("invalid_changes", format!("send 1 to {} changes", crate::CHANGES_MAX)));
            }
            let changes = a.changes.iter().map(change).collect::<Result<Vec<_>, _>>()?;
            (Command::Adjust { changes, cause: by_event.clone() }, by_event)
        }
        cmd::HOLD | cmd::SELL => {
            let h: cmd::Hold = data(env)?;
            let id = fields::reservation_id(&h.reservation_id)?;
            let request = hold_request(&h)?;
            let key = format!("reservation:{id}");
            let command =
                if env.ty == cmd::HOLD { Command::Hold { id, request } } else { Command::Sell { id, request } };
            (command, key)
        }
        cmd::COMMIT => {
            let c: cmd::Commit = data(env)?;
            let lines = c
                .lines
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| Ok(CommitLine { sku: fields::sku(&l.sku)?, quantity: quantity(l.quantity)? }))
                        .collect::<Result<Vec<_>, ApiError>>()
                })
                .transpose()?;
            (Command::Commit { id: fields::reservation_id(&c.reservation_id)?, lines }, by_event)
        }
        cmd::FULFIL => {
            let r: cmd::ReservationRef = data(env)?;
            (Command::Fulfil { id: fields::reservation_id(&r.reservation_id)? }, by_event)
        }
        cmd::RELEASE => {
            let r: cmd::ReservationRef = data(env)?;
            (Command::Release { id: fields::reservation_id(&r.reservation_id)? }, by_event)
        }
        cmd::SET_FROM_EXTERNAL => {
            let s: cmd::SetFromExternal = data(env)?;
            let observed_at = chrono::DateTime::parse_from_rfc3339(&s.observed_at)
                .map_err(|e| invalid(format!("observed_at: {e}")))?
                .with_timezone(&chrono::Utc);
            let system = fields::text(&s.system, "system", 64)?;
            let command = Command::SetFromExternal {
                sku: fields::sku(&s.sku)?,
                location: fields::location(&s.location)?,
                on_hand: fields::level(&s.on_hand.into(), "on_hand")?,
                system,
                observed_at,
                reference: s
                    .reference
                    .as_deref()
                    .map(|r| fields::text(r, "reference", fields::TEXT_BYTES_MAX))
                    .transpose()?,
            };
            (command, by_event)
        }
        other => return Err(unsupported(other)),
    })
}

/// Whether `ty` names a command this function applies; any other event is answered by its type alone, whatever
/// its data.
pub fn is_command(ty: &str) -> bool {
    cmd::ALL.contains(&ty)
}

/// The answer to a valid event of a type that is not a Stockroom command.
pub fn unsupported(ty: &str) -> ApiError {
    ApiError::invalid("unsupported_command", format!("{ty:?} is not a Stockroom command"))
        .with_details(json!({ "known": cmd::ALL }))
}

/// Applies one command exactly once: the same key answers as the first time did, a refusal is acknowledged
/// (and leaves as a `reservation.refused` event), a command ahead of its predecessor is "not yet" (503). The
/// answer for the sender: `{"outcome": "applied" | "duplicate" | "refused", ...}`.
pub async fn apply(ledger: &dyn Ledger, env: &Envelope) -> Result<Value, ApiError> {
    let (command, key) = decode(env)?;
    let mut hash = Sha256::new();
    hash.update(env.ty.as_bytes());
    hash.update(b"\n");
    hash.update(env.data.to_string());
    let idem = Idempotency { key, request_hash: hex::encode(hash.finalize()) };
    let delivery = Delivery { command_type: env.ty.clone(), command_id: format!("{}#{}", env.source, env.id) };
    stockroom_runtime::delivered(ledger.execute(command, Some(idem), Some(delivery)).await?)
}
