//! The one place where outcomes and errors become HTTP answers: which status each fault, refusal and store
//! outcome gets, and the one shape of every error body. Handlers and the store name what happened (a
//! [`Fault`], a [`Refusal`], an [`Outcome`]); only this module knows what HTTP makes of it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stockroom_domain::Refusal;
use stockroom_store::{Answer, Effect, Outcome, StoreError};

/// What kind of trouble a request is in, as the client must understand it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request cannot be read: JSON syntax, the query string, a header, not a CloudEvent.
    Malformed,
    /// Well formed, but breaks a rule: a bad name or quantity, the wrong shape, an invalid command.
    Invalid,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    /// The state of things says no: not enough stock, a compare-and-set that lost, a key still in use.
    Conflict,
    /// What was asked for is no longer there to act on: a lapsed hold.
    Gone,
    TooLarge,
    UnsupportedMedia,
    /// Not now: try again (with `Retry-After`).
    Unavailable,
    /// Our fault.
    Internal,
}

impl Fault {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Gone => StatusCode::GONE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The ledger's refusals, as faults.
pub fn refusal_fault(r: &Refusal) -> Fault {
    match r {
        Refusal::InsufficientStock { .. }
        | Refusal::OnHandMismatch { .. }
        | Refusal::InvalidState { .. }
        | Refusal::ReservationExists { .. } => Fault::Conflict,
        Refusal::ReservationExpired { .. } => Fault::Gone,
        Refusal::UnknownReservation { .. } => Fault::NotFound,
        Refusal::NegativeOnHand { .. }
        | Refusal::UnknownLocation { .. }
        | Refusal::LineNotInReservation { .. }
        | Refusal::CommitExceedsHeld { .. }
        | Refusal::DuplicateLine { .. }
        | Refusal::QuantityOverflow => Fault::Invalid,
    }
}

/// What a refusal adds to its error body.
fn refusal_details(r: &Refusal) -> Value {
    match r {
        Refusal::InsufficientStock { shortfalls } => json!({ "shortfalls": shortfalls }),
        Refusal::OnHandMismatch { sku, location, expected, actual } => {
            json!({ "sku": sku, "location": location, "expected_on_hand": expected, "actual_on_hand": actual })
        }
        Refusal::NegativeOnHand { sku, location, would_be } => {
            json!({ "sku": sku, "location": location, "would_be": would_be })
        }
        Refusal::UnknownLocation { location } => json!({ "location": location }),
        Refusal::ReservationExpired { reservation_id }
        | Refusal::UnknownReservation { reservation_id }
        | Refusal::ReservationExists { reservation_id } => json!({ "reservation_id": reservation_id }),
        Refusal::InvalidState { reservation_id, status, action } => {
            json!({ "reservation_id": reservation_id, "status": status, "action": action })
        }
        Refusal::LineNotInReservation { sku } | Refusal::DuplicateLine { sku } => json!({ "sku": sku }),
        Refusal::CommitExceedsHeld { sku, held, requested } => {
            json!({ "sku": sku, "held": held, "requested": requested })
        }
        Refusal::QuantityOverflow => json!({}),
    }
}

/// The one shape of every error body: `{"error": code, "message": ..., ...details}`.
pub fn error_body(code: &str, message: &str, details: Value) -> Value {
    let mut body = json!({ "error": code, "message": message });
    if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), details) {
        map.extend(extra);
    }
    body
}

fn answer(fault: Fault, body: Value) -> Answer {
    Answer { status: fault.status().as_u16(), body }
}

/// An outcome as the client is told it; the store keeps this under the idempotency key for replays.
pub fn render(outcome: &Outcome) -> Answer {
    let ok = |status: StatusCode, body: Value| Answer { status: status.as_u16(), body };
    match outcome {
        Outcome::Done(Effect::Levels { rows, stale }) => {
            let mut body = json!({ "levels": rows });
            if let Some(stale) = stale {
                body["stale"] = json!(stale);
            }
            ok(StatusCode::OK, body)
        }
        Outcome::Done(Effect::Reservation { view, created }) => ok(
            if *created { StatusCode::CREATED } else { StatusCode::OK },
            serde_json::to_value(view).unwrap_or(Value::Null),
        ),
        Outcome::Done(Effect::Expired { count }) => ok(StatusCode::OK, json!({ "expired": count })),
        Outcome::Refused(r) => answer(refusal_fault(r), error_body(r.code(), &r.to_string(), refusal_details(r))),
        // How a replay is sent: the first answer's body, and 200 where the first was 201 (nothing was created
        // now).
        Outcome::Replayed(first) => {
            Answer { status: if first.status == 201 { 200 } else { first.status }, body: first.body.clone() }
        }
        Outcome::InProgress => answer(
            Fault::Conflict,
            error_body("idempotency_in_progress", "a request with this idempotency key is still running", json!({})),
        ),
        Outcome::Mismatch => answer(
            Fault::Invalid,
            error_body("idempotency_mismatch", "this idempotency key was used with a different request", json!({})),
        ),
    }
}

/// Sends an outcome; a replayed one says so in `Idempotent-Replayed: true`.
pub fn respond(outcome: Outcome) -> Response {
    let a = render(&outcome);
    let mut response =
        json_response(StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &a.body);
    match outcome {
        Outcome::Replayed(_) => {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        // Not final: the same request, sent again shortly, gets the running attempt's answer.
        Outcome::InProgress => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// A command that came as an event (CloudEvent, Pub/Sub push, queued webhook command), answered for its sender:
/// applied, a duplicate and a refusal are all acknowledged (200), since a refusal is final and a duplicate
/// changes nothing; another delivery still running is "not yet" (503) so that it comes again.
pub fn delivered(outcome: Outcome) -> Result<Value, ApiError> {
    Ok(match &outcome {
        Outcome::Done(_) => json!({ "outcome": "applied", "answer": render(&outcome).body }),
        Outcome::Replayed(first) => json!({ "outcome": "duplicate", "answer": first.body }),
        Outcome::Refused(_) => json!({ "outcome": "refused", "error": render(&outcome).body }),
        Outcome::InProgress => {
            return Err(ApiError::new(Fault::Unavailable, "in_progress", "the same command is being applied"));
        }
        Outcome::Mismatch => {
            return Err(ApiError::invalid("idempotency_mismatch", "this command's key was used with other data"));
        }
    })
}

/// Everything a handler can fail with. Client faults carry their code and message; store failures are
/// classified here: transient ones are 503 (the sender retries), the rest 500, and neither says anything
/// internal in the body; the whole cause chain goes to the log.
#[derive(Debug)]
pub enum ApiError {
    Client { fault: Fault, code: &'static str, message: String, details: Value },
    Store(StoreError),
    Timeout,
}

impl ApiError {
    pub fn new(fault: Fault, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client { fault, code, message: message.into(), details: json!({}) }
    }

    pub fn with_details(mut self, extra: Value) -> Self {
        if let Self::Client { details, .. } = &mut self {
            *details = extra;
        }
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Fault::Malformed, code, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Fault::Invalid, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Fault::NotFound, code, message)
    }

    /// A query string that cannot be read, or a query parameter out of its range: the request line is wrong,
    /// wherever it is sent (400).
    pub fn bad_query(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Fault::Malformed, code, message)
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { fault, .. } => fault.status(),
            Self::Timeout => Fault::Unavailable.status(),
            Self::Store(e) if e.is_transient() => Fault::Unavailable.status(),
            Self::Store(_) => Fault::Internal.status(),
        }
    }

    /// Whether the sender should try again later.
    pub fn is_transient(&self) -> bool {
        self.status() == Fault::Unavailable.status()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match self {
            Self::Client { code, message, details, .. } => error_body(code, &message, details),
            Self::Timeout => error_body("timeout", "the request took too long; retry", json!({})),
            // Not a fault: the command came before what it depends on. Say so, so that the sender knows why.
            Self::Store(StoreError::NotYet(why)) => {
                tracing::info!(reason = %why, "command deferred: not yet applicable");
                error_body("not_yet", &format!("{why}; deliver it again later"), json!({}))
            }
            Self::Store(e) if e.is_transient() => {
                tracing::warn!(error = ?e, "store unavailable");
                error_body("unavailable", "the ledger is unavailable right now; retry", json!({}))
            }
            Self::Store(e) => {
                tracing::error!(error = ?e, "store failure");
                error_body("internal", "something went wrong on our side", json!({}))
            }
        };
        let mut response = json_response(status, &body);
        if status == Fault::Unavailable.status() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_still_running_is_409_with_retry_after_and_a_replay_says_so() {
        let running = respond(Outcome::InProgress);
        assert_eq!(running.status(), StatusCode::CONFLICT);
        assert_eq!(running.headers().get(header::RETRY_AFTER).map(HeaderValue::as_bytes), Some(&b"1"[..]));

        let first = Answer { status: 201, body: json!({ "reservation_id": "r" }) };
        let replayed = respond(Outcome::Replayed(first));
        assert_eq!(replayed.status(), StatusCode::OK);
        assert_eq!(replayed.headers().get("idempotent-replayed").map(HeaderValue::as_bytes), Some(&b"true"[..]));
        assert!(replayed.headers().get(header::RETRY_AFTER).is_none());
    }
}
