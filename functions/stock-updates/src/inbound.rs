//! Events in: CloudEvents on `/events` (Stockroom commands, Eventarc's Pub/Sub `messagePublished` and Cloud
//! Storage `object.finalized`), Pub/Sub pushes on `/pubsub/push`, and the outbox relay job.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use stockroom_runtime::events::{self, IncomingEvent};
use stockroom_runtime::{ApiError, RawBody, Services, ok, relay};
use stockroom_store::CountsFile;

use crate::commands;
use stockroom_runtime::events::{Envelope, envelope_of_message};

const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";
const OBJECT_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

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

/// CloudEvents over HTTP, binary or structured, as Eventarc sends them.
#[utoipa::path(post, path = "/events", tag = "events",
    responses((status = 200, description = "applied, duplicate or refused (a refusal leaves as reservation.refused)"),
              (status = 400, description = "not a valid CloudEvent"), (status = 401, description = "no valid OIDC token"),
              (status = 422, description = "a valid event carrying an invalid command"),
              (status = 503, description = "transient, or the command came before its predecessor: deliver again")))]
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

/// A Pub/Sub push subscription's request.
#[utoipa::path(post, path = "/pubsub/push", tag = "events",
    responses((status = 200, description = "applied, duplicate or refused"), (status = 400, description = "not a push envelope"),
              (status = 401, description = "no valid OIDC token"), (status = 422, description = "invalid command"),
              (status = 503, description = "transient: Pub/Sub redelivers")))]
pub async fn pubsub_push(State(services): State<Services>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let message = events::parse_push(&body)?;
    let envelope = envelope_of_message(&message)?;
    Ok(acknowledged(apply(&services, &envelope).await?))
}

/// Cloud Scheduler target: publishes what waits in the outbox. Safe to run twice, and at any time.
#[utoipa::path(post, path = "/jobs/relay-outbox", tag = "events", responses((status = 200, description = "`{\"published\": n}`")))]
pub async fn relay_outbox(State(services): State<Services>) -> Result<Response, ApiError> {
    let published = relay::relay(&services, 100).await?;
    Ok(ok(StatusCode::OK, &json!({ "published": published })))
}
