//! `GET /v1/events/stream`: the outgoing events as server-sent events, for dashboards and tests.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::http::ApiError;
use crate::services::Services;

pub fn router(services: Services) -> Router {
    Router::new().route("/v1/events/stream", get(stream)).with_state(services)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only events whose type starts with this (e.g. `dev.stockroom.reservation.`); every event without it.
    pub types: Option<String>,
}

/// One server-sent event of `GET /v1/events/stream`, for the OpenAPI description.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the events `stream` writes")]
pub struct StreamEvent {
    /// The CloudEvent's id (a `lagged` event has none).
    id: Option<String>,
    /// The CloudEvent's type, or `lagged`.
    event: String,
    /// The structured CloudEvent as JSON; for `lagged`, how many events were skipped.
    data: String,
}

/// The outgoing events (the same CloudEvents as `inventory-events`) as server-sent events, for dashboards and
/// tests: each SSE `id` is the event's id, `event` its type, `data` the structured CloudEvent. A listener too
/// slow to keep up skips ahead and is told so by a `lagged` event whose data is the number skipped. A comment
/// line keeps the connection alive every 15 s. The stream does not end.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamQuery),
    responses(
        (status = 200, description = "An endless stream of server-sent events.",
         content_type = "text/event-stream", body = StreamEvent),
        (status = 400, response = inline(crate::openapi::BadRequest)),
        (status = 401, response = inline(crate::openapi::Unauthenticated)),
        (status = 503, response = inline(crate::openapi::Unavailable))))]
pub(crate) async fn stream(
    State(services): State<Services>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // A JSON 400 like every other query string: axum's own rejection is plain text.
    let Query(q) = query.map_err(|e| ApiError::bad_query("invalid_query", e.body_text()))?;
    let rx = services.live.subscribe();
    let prefix = q.types.unwrap_or_default();
    let events = futures::stream::unfold((rx, prefix), |(mut rx, prefix)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => {
                    let ty = e["type"].as_str().unwrap_or_default();
                    if !ty.starts_with(&prefix) {
                        continue;
                    }
                    Event::default().id(e["id"].as_str().unwrap_or_default()).event(ty).data(e.to_string())
                }
                // A listener too slow to keep up skips ahead, and is told by how many events.
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, prefix)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
