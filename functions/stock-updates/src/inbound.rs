//! Events in: CloudEvents on `/events` (Stockroom commands, Eventarc's Pub/Sub `messagePublished` and Cloud
//! Storage `object.finalized`), Pub/Sub pushes on `/pubsub/push`, and the outbox relay job.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use stockroom_runtime::events::{self, IncomingEvent};
use stockroom_runtime::openapi::{
    BadRequest, CloudEvent, ErrorBody, PushEnvelope, TooLarge, Unauthenticated, Unavailable,
};
use stockroom_runtime::{ApiError, RawBody, Services, ok, relay};
use stockroom_store::CountsFile;

use crate::commands;
use stockroom_runtime::events::{Envelope, envelope_of_message};

const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";
const OBJECT_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

/// What `/events` and `/pubsub/push` answer, for the OpenAPI description.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the JSON that `commands::apply` and `one_event` build")]
pub struct EventOutcome {
    /// `applied`, `duplicate` (applied before: `answer` is the first answer) or `refused` (the ledger said no:
    /// `error`, and a `reservation.refused` event leaves); a counts file is `recorded` (or `duplicate`).
    #[schema(pattern = "^(applied|duplicate|refused|recorded)$")]
    pub outcome: String,
    /// The answer the HTTP API gives to the same command.
    #[schema(value_type = Option<Object>)]
    pub answer: Option<Value>,
    /// A refusal's error body.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

fn acknowledged(body: Value) -> Response {
    ok(StatusCode::OK, &body)
}

async fn apply(services: &Services, env: &Envelope) -> Result<Value, ApiError> {
    commands::apply(services.ledger().as_ref(), env).await
}

async fn one_event(services: &Services, e: &IncomingEvent) -> Result<Value, ApiError> {
    match e.ty.as_str() {
        MESSAGE_PUBLISHED => {
            let message = events::message_published(e)?;
            apply(services, &envelope_of_message(&message)?).await
        }
        OBJECT_FINALIZED => {
            let o = events::storage_object(e)?;
            let file = CountsFile { bucket: o.bucket, name: o.name, generation: o.generation, size: o.size };
            // Recorded durably for the reconciler; the file itself is read when it runs.
            let new = services.counts_files().record_counts_file(file.clone()).await?;
            Ok(json!({ "outcome": if new { "recorded" } else { "duplicate" }, "file": file }))
        }
        // Told by its type before its data is read: an event that is no command may carry any data (binary,
        // `data_base64`, none).
        ty if !commands::is_command(ty) => Err(commands::unsupported(ty)),
        _ => {
            let data = e.data_json("command")?;
            apply(services, &Envelope { ty: e.ty.clone(), source: e.source.clone(), id: e.id.clone(), data }).await
        }
    }
}

/// CloudEvents over HTTP, as Eventarc sends them: a Stockroom command (`dev.stockroom.command.*`, described in
/// `events/schemas`), Pub/Sub's `google.cloud.pubsub.topic.v1.messagePublished` carrying one, or Cloud Storage's
/// `google.cloud.storage.object.v1.finalized` for a counts file. Structured mode is described here; binary mode
/// takes the same attributes as `ce-*` headers (percent-encoded) and the data as the body, its media type in
/// Content-Type.
#[utoipa::path(post, path = "/events", tag = "events",
    request_body(content((CloudEvent = "application/cloudevents+json")),
        description = "A structured-mode CloudEvent, or (binary mode) the event's data with `ce-*` headers"),
    responses((status = 200, body = EventOutcome, description = "applied, duplicate or refused (a refusal leaves as reservation.refused)"),
              (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 413, response = inline(TooLarge)),
              (status = 415, body = ErrorBody, description = "a batch (`application/cloudevents-batch+json`) or a structured format other than JSON"),
              (status = 422, body = ErrorBody, description = "a valid event carrying an invalid command, or a type that is no command (`unsupported_command`)"),
              (status = 503, response = inline(Unavailable))))]
pub async fn events(
    State(services): State<Services>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let incoming = events::parse_cloudevents(&headers, &body, false)?;
    let mut results = Vec::with_capacity(incoming.len());
    for e in &incoming {
        results.push(one_event(&services, e).await?);
    }
    Ok(acknowledged(match results.len() {
        1 => results.remove(0),
        _ => Value::Array(results),
    }))
}

/// A Pub/Sub push subscription's request: the message carries a Stockroom command as a CloudEvent (structured
/// in its data, or binary with `ce-*` attributes).
#[utoipa::path(post, path = "/pubsub/push", tag = "events", request_body = PushEnvelope,
    responses((status = 200, body = EventOutcome, description = "applied, duplicate or refused"),
              (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 413, response = inline(TooLarge)),
              (status = 422, body = ErrorBody, description = "a message that carries no command, or an invalid one"),
              (status = 503, response = inline(Unavailable))))]
pub async fn pubsub_push(State(services): State<Services>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let message = events::parse_push(&body)?;
    let envelope = envelope_of_message(&message)?;
    Ok(acknowledged(apply(&services, &envelope).await?))
}

/// What `/jobs/relay-outbox` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Published {
    /// Outbox events published by this run.
    pub published: usize,
}

/// Cloud Scheduler target: publishes what waits in the outbox. Safe to run twice, and at any time.
#[utoipa::path(post, path = "/jobs/relay-outbox", tag = "events",
    responses((status = 200, body = Published), (status = 401, response = inline(Unauthenticated)),
              (status = 503, response = inline(Unavailable))))]
pub async fn relay_outbox(State(services): State<Services>) -> Result<Response, ApiError> {
    let published = relay::relay(&services, 100).await?;
    Ok(ok(StatusCode::OK, &Published { published }))
}
